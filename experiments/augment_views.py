"""Feature augmentation prototype: extra CNN views of the train split's images (flip, crops).

Runs the features stage's CNN (pipeline.cnn, pipeline.images: same decode, crop and
normalization) on each train image's pixels flipped left-right, and on a zoomed crop
(the central 80%, resized back), and writes float16[views, N, D] in the harness's
train order to OUT (.npy). One TF thread: it shares the machine.

    PYTHONPATH=. python experiments/augment_views.py --root /data/demo \
        --images '/data/demo-src/images/{photo_id}.png' --out /data/demo-views.npy
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def views_of(pixels: np.ndarray) -> list[np.ndarray]:
    """float32[B, S, S, 3] normalized images -> [flipped, central-80% crop resized back]."""
    import tensorflow as tf

    size = pixels.shape[1]
    flipped = pixels[:, :, ::-1, :]
    margin = int(round(size * 0.1))
    crop = tf.image.resize(pixels[:, margin:size - margin, margin:size - margin, :], (size, size)).numpy()
    return [flipped, crop]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    import sys
    sys.path.insert(0, ".")
    from experiments import harness
    from pipeline import cnn, images

    harness.limit_threads(1)
    corpus = harness.load_corpus(args.root)
    train = corpus.splits["train"]
    network = cnn.load_mobilenet_v2()
    out = np.zeros((2, len(train), train.feature.shape[1]), np.float16)
    started = time.time()
    for start in range(0, len(train), args.batch):
        ids = train.photo_id[start:start + args.batch]
        blobs = [open(args.images.format(photo_id=int(p)), "rb").read() for p in ids]
        pixels, reasons = images.preprocess_batch(blobs, cnn.INPUT_SIZE, 1)
        assert all(r is None for r in reasons), reasons
        for v, view in enumerate(views_of(pixels)):
            out[v, start:start + len(ids)] = np.asarray(network.predict_on_batch(view)).astype(np.float16)
        if start % (args.batch * 20) == 0:
            print(f"{start + len(ids)}/{len(train)} images, {time.time() - started:.0f}s", flush=True)
    # check: the stored features/ and this CNN agree on the original view
    blobs = [open(args.images.format(photo_id=int(p)), "rb").read() for p in train.photo_id[:8]]
    pixels, _ = images.preprocess_batch(blobs, cnn.INPUT_SIZE, 1)
    again = np.asarray(network.predict_on_batch(pixels))
    print("max |features/ - recomputed| on 8 images:", float(np.abs(again - train.feature[:8]).max()))
    np.save(args.out, out)
    print(f"wrote {out.shape} to {args.out} in {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
