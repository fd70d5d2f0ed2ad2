"""Keras ``model.fit`` on im2vec's epochs, read by Petastorm's own ``make_batch_reader`` + ``make_petastorm_dataset``.

    python examples/keras_fit.py --root ROOT --epochs 5 --out tagger.keras

An epoch is a Petastorm dataset: its stored Unischema says ``feature`` is float16[D] in Petastorm's
NdarrayCodec, and that codec decodes it (Petastorm's TensorFlow bridge has no float16, so the
TransformSpec hands it over as float32). The model is a linear softmax over the vocabulary,
trained towards each row's positive tags. im2vec's library only waits for the epochs
``im2vec schedule`` has not made yet and records progress as consumer ``--consumer``.
"""
import argparse

import keras
import numpy as np
import tensorflow as tf
from petastorm import make_batch_reader
from petastorm.etl.dataset_metadata import get_schema_from_dataset_url
from petastorm.tf_utils import make_petastorm_dataset
from petastorm.transform import TransformSpec

from pipeline import reader


def train(root: str, epochs: int, consumer: str, poll_seconds: float = 10, batch_size: int = 128) -> keras.Model:
    first = reader.wait_for_epoch(root, 1, consumer=consumer, poll_seconds=poll_seconds)
    vocab_size, positives = first["vocab_size"], first["positives"]
    field = get_schema_from_dataset_url(reader.epoch_url(root, 1)).feature
    decode = TransformSpec(lambda rows: rows.assign(feature=[field.codec.decode(field, b).astype(np.float32)
                                                             for b in rows.feature]),
                           edit_fields=[("feature", np.float32, field.shape, False)])
    model = keras.Sequential([keras.Input(field.shape), keras.layers.Dense(vocab_size)])
    model.compile(keras.optimizers.Adam(0.01), keras.losses.CategoricalCrossentropy(from_logits=True))
    for epoch in range(1, epochs + 1):
        reader.wait_for_epoch(root, epoch, consumer=consumer, poll_seconds=poll_seconds)
        # The dummy pool reads in this thread: petastorm 0.13.1's thread pool can end a pass early.
        with make_batch_reader(reader.epoch_url(root, epoch), num_epochs=1, transform_spec=decode,
                               schema_fields=["feature", "pos_ids"], reader_pool_type="dummy") as rows:
            data = make_petastorm_dataset(rows).unbatch().batch(batch_size).map(
                lambda row: (row.feature, tf.reduce_sum(tf.one_hot(row.pos_ids, vocab_size), axis=1) / positives))
            history = model.fit(data, epochs=1, verbose=0)
        reader.report(root, consumer, epoch, step=int(model.optimizer.iterations))
        print(f"epoch {epoch}: loss {history.history['loss'][-1]:.3f}")
    return model


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--consumer", default="keras-fit")
    parser.add_argument("--poll-seconds", type=float, default=10, help="how often to look for an epoch not made yet")
    parser.add_argument("--out", required=True, help="a .keras file for the trained model")
    args = parser.parse_args()
    train(args.root, args.epochs, args.consumer, args.poll_seconds).save(args.out)
