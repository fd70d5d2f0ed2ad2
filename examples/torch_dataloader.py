"""Plain PyTorch on one im2vec epoch, read by Petastorm's own ``make_reader`` + ``petastorm.pytorch.DataLoader``.

    python examples/torch_dataloader.py --epoch-url file:///ROOT/epochs/epoch=00001 --passes 5 --out tagger.pt

Runs where torch and petastorm are installed (``make torch-venv``), with no im2vec code: an epoch is a
Petastorm dataset whose stored Unischema says ``feature`` is float16[D] in Petastorm's NdarrayCodec, so
the DataLoader hands over ``feature`` float16[B, D], ``pos_ids`` int32[B, P] and ``neg_ids`` int32[B, K]
as tensors. The model is a linear softmax over the vocabulary (V from the epoch's ``_manifest.json``),
trained towards each row's positive tags, as examples/keras_fit.py does.
"""
import argparse
import json
import warnings

import fsspec
import torch
from petastorm import make_reader
from petastorm.pytorch import DataLoader

# petastorm 0.13.1 reads through pyarrow 14's deprecated ParquetDataset API, with a warning per call.
warnings.filterwarnings("ignore", category=FutureWarning, module="petastorm")


FIELDS = ["photo_id", "feature", "pos_ids", "neg_ids"]   # an epoch of the in-batch methods adds own_ids: not read here


def batches(epoch_url: str, batch_size: int = 128):
    """One pass over the epoch: dicts of tensors photo_id, feature, pos_ids, neg_ids (B rows each)."""
    # The dummy pool reads in this thread: petastorm 0.13.1's thread pool can end a pass early.
    with DataLoader(make_reader(epoch_url, num_epochs=1, reader_pool_type="dummy", schema_fields=FIELDS),
                    batch_size=batch_size) as loader:
        yield from loader


def train(epoch_url: str, passes: int) -> torch.nn.Linear:
    with fsspec.open(epoch_url.rstrip("/") + "/_manifest.json") as file:
        manifest = json.load(file)
    model = torch.nn.Linear(manifest["feature_dim"], manifest["vocab_size"])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for n in range(1, passes + 1):
        losses = []
        for batch in batches(epoch_url):
            pos_ids = batch["pos_ids"].long()
            target = torch.zeros(len(pos_ids), manifest["vocab_size"]).scatter_add_(
                1, pos_ids, torch.full(pos_ids.shape, 1 / pos_ids.shape[1]))          # each positive weighs 1/P
            loss = torch.nn.functional.cross_entropy(model(batch["feature"].float()), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        print(f"pass {n}: loss {sum(losses) / len(losses):.3f}")
    return model


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epoch-url", required=True, help="one epoch's folder, e.g. file:///ROOT/epochs/epoch=00001")
    parser.add_argument("--passes", type=int, default=1, help="passes over that one epoch")
    parser.add_argument("--out", required=True, help="a .pt file for the model's state_dict")
    args = parser.parse_args()
    torch.save(train(args.epoch_url, args.passes).state_dict(), args.out)
