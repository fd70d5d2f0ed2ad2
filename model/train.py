"""The trainer: learn g(f), the map from image features to tag vectors, from pre-sampled epochs.

Read it top to bottom: the configuration it uses, the pieces (placement and distribution, the
training step, validation, outputs), building or restoring the model, one epoch, the end of an
epoch, and last :func:`run`, the loop over epochs. Each training row is an image's feature f,
P positive tags (drawn by the sample stage) and negative candidates chosen by the sampling method
(config ``sampling``, an entry of pipeline.sampling.METHODS): the K negatives the sample stage
drew (Option II), what the method draws from the batch in the step (the next image's tags, the
batch's positives, every tag), or both (``mixed``, the default), never the image's own tags; the loss pulls g(f)
towards the positives' vectors and away from the negatives' (``loss``: word2vec's negative
sampling, Fast0Tag's pairwise ranking, or a sampled softmax; see model/projection.py), with the
log-Q correction on request (``logq_correction``: :class:`Objective`).

Reads (ROOT = the run root URI):
    ROOT/epochs/epoch=E/         training rows, via Petastorm (model/data.py); the trainer waits for an
                                 epoch the scheduler has not finished (no _manifest.json) yet
    ROOT/wordvec/vectors/        the starting tag table, row = tag_id
    ROOT/vocab/ tagged/ features/  the validation set (validation split), checked after every epoch
Writes:
    ROOT/model/progress.json     {"epoch": last finished, "best_epoch": the one exported, "step", "val_loss",
                                 "val_p_at_5", "val_r_at_5", "val_f1", "train_loss", "popularity_p_at_5",
                                 "popularity_r_at_5", "popularity_f1", "history": [...]}; replaced atomically at every checkpoint
    ROOT/consumers/NAME.json     the trainer's progress as the consumer ``consumer`` (pipeline.datasets.consumers):
                                 at every checkpoint and while waiting for an epoch; the scheduler reads it
    ROOT/model/projection.keras  g as a Keras model: float32[N, D] features -> float32[N, d] tag space
                                 (this and the two below: the best epoch's by validation per-tag F1)
    ROOT/model/tag_vectors.npy   float32[V, d], the tag table used in training (row = tag_id)
    ROOT/model/tag_bias.npy      float32[V]: add to g(f)·v_t to rank tags for an image (projection.tag_bias)
    ROOT/reports/train.png       train/validation loss and P@5/R@5/per-tag F1 per epoch, popularity baseline
                                 dashed, the exported epoch marked
    MODEL_DIR/checkpoints/       tf.train.CheckpointManager, every checkpoint_steps steps and at each epoch end
    MODEL_DIR/checkpoints/best/  the exported epoch's g and tag table (the chief; kept when the above rotate out)
    MODEL_DIR/logs/              TensorBoard (loss every LOG_STEPS steps; validation every epoch)
    ROOT/model/_manifest.json    last, once every epoch through ``epochs`` is trained (or training stopped early)
MODEL_DIR is ROOT/model for a file:// root, else the local (or shared) folder ``model_dir``:
TensorFlow writes checkpoints and logs to local file systems only.

Placement ("wide on CPU, deep on GPU"): g lives where TensorFlow puts it (the GPU when there is
one); the tag table lives on the CPU and a step reads and updates only the rows its batch names
(:class:`model.projection.TagTable`), so a step costs the same for 10k or 10M tags.

Joint optimization and zero-shot words: with ``tag_learning_rate: 0`` the table is frozen at the
wordvec vectors and g learns to map images into that pretrained space itself. With
``tag_learning_rate > 0`` the vocabulary's rows are trained too (sparse Adagrad, their own rate),
starting from their pretrained vectors. Either way the table is a copy of the vocabulary's rows
only: ROOT/wordvec/words.kv is never touched, so a word outside the vocabulary keeps its
pretrained vector and still scores an image as g(f)·v_word. That keeps working after joint
training because the table starts in the pretrained space and moves slowly (its own learning
rate, and Adagrad's steps shrink as a row's accumulator grows), so g keeps mapping into that
space; the manifest's ``tag_cosine_to_initial`` (mean cosine of each trained row to its
pretrained vector) says how far the vocabulary moved; keep it near 1 (a lower
tag_learning_rate) when zero-shot words matter. Tag with tag_vectors.npy (+ tag_bias.npy) for
vocabulary tags and words.kv for every other word.

Validation ranks the whole vocabulary for each image by g(f)·v_t + tag_bias_t, as ``im2vec tag``
and the evaluate stage do (:func:`model.projection.tag_bias` is the one ranking rule; the trainer
writes it to tag_bias.npy): training samples positives ∝ pos_weight and offers each tag as a
negative as often as its sampling method does (Option II: ∝ neg_weight; :func:`sampling_terms`),
which lifts rare tags' raw scores above their odds, and ``tag_bias_strength`` says how much of
that lift to undo. The validation loss is the training objective: the method's draws from
validation batches of the training batch's size. It logs per-image P@5/R@5 and per-tag F1 at 5
(model.metrics.per_tag_metrics).

Why the defaults are what they are (the settings tried, with their figures): docs/experiments.md.
In short, judge a run by val_f1, not val_loss: with the ranking and softmax losses the validation
loss drifts up after a few epochs while per-tag F1 still improves.

Model selection: validation holds at most ``validation_user_cap`` images per user (one bulk
uploader held ~850 of the demo's 1,031 validation images). The outputs (projection.keras,
tag_vectors.npy, tag_bias.npy) are the best epoch's by validation per-tag F1, not the last one's,
and training stops once ``patience`` epochs in a row have not beaten it (0 = train every epoch);
progress.json and the manifest name ``best_epoch``, and reports/train.png marks it. Every worker
validates, so that all of them stop at the same epoch.

Resuming: a killed trainer is started again with the same command. It restores the last
checkpoint (weights, optimizer slots, table, step and last finished epoch) and goes on with the
next epoch; an epoch that was cut short is trained again from its start (its earlier steps are
kept in the weights, so its rows are seen about 1.x times), and the step counter continues.
The same command repairs a finished model whose files fail the data guard (one truncated or
missing; pipeline.datasets.model): before it trains on, it writes them again from checkpoints/best/
and the history (progress.json's, or the manifest's copy), so even with every epoch trained
`im2vec train` is the remedy the guard names (:func:`export_again`).

Beyond one machine (data parallel): start one process per worker (one GPU each; hide the others
with CUDA_VISIBLE_DEVICES) with TF_CONFIG set, e.g. on two hosts::

    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}' \\
        im2vec train --root file:///shared/im2vec/run --set num_epochs=10
    (the same on host2 with "index": 1; a file:// root on a shared file system, or an hdfs://
    or s3a:// root with --set model_dir=/local/folder, which Petastorm reads through libhdfs or s3fs)

Then the trainer uses tf.distribute.MultiWorkerMirroredStrategy: each worker reads its Petastorm
shard of every epoch (whole row groups, cur_shard = its index, shard_count = workers, the same
row-group seed everywhere so the shards are disjoint) and runs the same number of steps (an
epoch's rows / global batch; a short shard starts over), g's gradients are all-reduced, and the
table's sparse row gradients are all-gathered, so every worker applies the same sparse update
to its own CPU copy of the table. Worker 0 is the chief: it validates and writes progress,
outputs and logs; each worker checkpoints into its own folder (MODEL_DIR/checkpoints, or
MODEL_DIR/checkpoints/worker-I), so a restarted job resumes on every worker. Every worker holds
the whole table (1M tags x 50 floats: 200 MB, as much again for Adagrad); a table beyond one
machine's memory would need ParameterServerStrategy, which this trainer does not implement (at
50 floats a row, a 64 GB worker holds some 100M tags with Adagrad's accumulator: far beyond the
vocabularies the vocab stage keeps, ``max_size``).
"""
from __future__ import annotations

import functools
import io
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from model.memory import keep_freed_memory
from model.metrics import TOP_K
from pipeline import Im2vecError, reader, sampling, storage
from pipeline.datasets import consumers
from pipeline.datasets import epochs as epochs_data, model as model_data, wordvec as wordvec_data

# --- configuration -----------------------------------------------------------------------------
# Config keys the trainer reads (documented in pipeline/defaults.yaml, "# --- train ---").
KEYS = ("epochs", "seed", "sampling", "exclude_own_tags", "logq_correction", "full_softmax_max_tags", "positives",
        "negatives", "hidden_sizes", "loss", "batch_size", "learning_rate",
        "tag_learning_rate", "tag_bias_strength", "shuffle_buffer", "reader_workers", "checkpoint_steps",
        "validation_images", "validation_user_cap", "patience", "train_poll_seconds", "model_dir", "consumer")
LOG_STEPS = 100           # train loss to TensorBoard every this many steps
KEEP_CHECKPOINTS = 3      # the CheckpointManager keeps the newest few


def log(message: str) -> None:
    """One progress line on stdout: ``[im2vec] train: message``."""
    print(f"[im2vec] train: {message}", flush=True)


def parameters(config: dict) -> dict:
    """The configuration values the trainer uses (:data:`KEYS`), checked and typed."""
    from model.projection import LOSSES

    sampling.method(config)     # a known sampling method, its settings true or false
    try:
        params = {
            "epochs": int(config["num_epochs"]), "seed": int(config["seed"]), "sampling": str(config["sampling"]),
            "exclude_own_tags": config["exclude_own_tags"], "logq_correction": config["logq_correction"],
            "full_softmax_max_tags": int(config["full_softmax_max_tags"]),
            "positives": int(config["positives"]), "negatives": int(config["negatives"]),
            "hidden_sizes": [int(size) for size in (config["hidden_sizes"] or [])],
            "loss": str(config["loss"]), "batch_size": int(config["batch_size"]),
            "learning_rate": float(config["learning_rate"]), "tag_learning_rate": float(config["tag_learning_rate"]),
            "tag_bias_strength": float(config["tag_bias_strength"]),
            "shuffle_buffer": int(config["shuffle_buffer"]), "reader_workers": int(config["reader_workers"]),
            "checkpoint_steps": int(config["checkpoint_steps"]), "validation_images": int(config["validation_images"]),
            "validation_user_cap": int(config["validation_user_cap"]), "patience": int(config["patience"]),
            "train_poll_seconds": float(config["train_poll_seconds"]), "model_dir": str(config["model_dir"] or ""),
            "consumer": str(config["consumer"] or ""),
        }
    except (TypeError, ValueError) as err:
        raise Im2vecError(f"train: a config value has the wrong type: {err}") from None
    if params["loss"] not in LOSSES:
        raise Im2vecError(f"loss must be one of {', '.join(LOSSES)}, got {params['loss']!r}")
    if min(params["epochs"], params["batch_size"], params["reader_workers"], params["checkpoint_steps"],
           params["validation_images"], *params["hidden_sizes"], 1) < 1:
        raise Im2vecError("epochs, batch_size, reader_workers, checkpoint_steps, validation_images and "
                          "hidden_sizes must be at least 1")
    if params["learning_rate"] <= 0 or params["tag_learning_rate"] < 0 or params["shuffle_buffer"] < 0 \
            or params["train_poll_seconds"] <= 0 or params["validation_user_cap"] < 0 or params["patience"] < 0:
        raise Im2vecError("learning_rate and train_poll_seconds must be > 0; tag_learning_rate, "
                          "shuffle_buffer, validation_user_cap and patience >= 0")
    if not 0 <= params["tag_bias_strength"] <= 1:
        raise Im2vecError(f"tag_bias_strength must be in [0, 1], got {params['tag_bias_strength']}")
    if params["consumer"]:
        consumers.uri("", params["consumer"])   # a usable name
    return params


# --- placement and distribution ----------------------------------------------------------------

def distribution():
    """``(strategy, worker_index, worker_count)``: MultiWorkerMirroredStrategy under TF_CONFIG, else TF's default.

    Worker 0 is the chief (the ``chief`` task when the cluster has one, else ``worker`` 0).
    """
    import tensorflow as tf

    if not os.environ.get("TF_CONFIG"):
        return tf.distribute.get_strategy(), 0, 1
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    resolver = strategy.cluster_resolver
    cluster = resolver.cluster_spec().as_dict()
    chiefs, workers = len(cluster.get("chief", [])), len(cluster.get("worker", []))
    index = resolver.task_id + (chiefs if resolver.task_type == "worker" else 0)
    if strategy.num_replicas_in_sync != chiefs + workers:
        raise Im2vecError(f"train: one replica per worker process is supported, got {strategy.num_replicas_in_sync} "
                          f"replicas on {chiefs + workers} workers; start one process per GPU "
                          "(CUDA_VISIBLE_DEVICES) instead")
    return strategy, index, chiefs + workers


def local_model_dir(root: str, configured: str) -> str:
    """Where TensorFlow writes checkpoints/ and logs/: ``model_dir`` if set, else ROOT/model (file:// only)."""
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(model_data.DATASET.uri(root))
    if not isinstance(fs, pafs.LocalFileSystem):
        raise Im2vecError(f"{root} is not a file:// root: set model_dir to a local or shared folder for "
                          "checkpoints and TensorBoard logs (e.g. --set model_dir=/data/im2vec-model)")
    return path


# --- the training step -------------------------------------------------------------------------

MASKED = -1e9   # a masked candidate's score: exp() of it is 0, so it adds nothing to a loss or a gradient


@dataclass(frozen=True)
class Objective:
    """What a step minimizes, in training and validation: the loss of each row's positives against the
    negatives its sampling method draws from the batch.

    Attributes:
        loss_name: a key of ``model.projection.LOSSES``.
        method: a :data:`pipeline.sampling.METHODS` entry; its ``draw`` makes each batch's candidates.
        log_q: float32[V], log Q_t subtracted from every score, positives' too (the log-Q correction
            of Yi et al., RecSys 2019; config ``logq_correction``), or None.
        batch_size: rows per validation batch (in-batch methods draw from the batch: as in training).
    """
    loss_name: str
    method: sampling.Method = sampling.METHODS["presampled"]
    log_q: np.ndarray | None = None
    batch_size: int = 128

    def per_image_loss(self, image_vectors, pos_ids, drawn, row_vectors, shared_vectors):
        """The loss per image, float32[B].

        Args:
            image_vectors: float32[B, d]; pos_ids: int32[B, P]; drawn: the method's
                ``pipeline.sampling.Candidates``; row_vectors: float32[B, P + C1, d], the vectors of
                :func:`row_ids`; shared_vectors: float32[C2, d] of ``drawn.shared_ids``, or None.
        """
        import tensorflow as tf
        from model.projection import loss_function, scores

        positives = tf.shape(pos_ids)[1]
        row_scores = scores(image_vectors, row_vectors)                    # [B, P + C1]
        if self.log_q is not None:
            row_scores -= tf.gather(self.log_q, row_ids(pos_ids, drawn))
        if drawn.shared_ids is not None:
            shared_scores = tf.matmul(image_vectors, shared_vectors, transpose_b=True)   # [B, C2]
            if self.log_q is not None:
                shared_scores -= tf.gather(self.log_q, drawn.shared_ids)[None, :]
            row_scores = tf.concat([row_scores, shared_scores], axis=1)
        neg_scores = row_scores[:, positives:]
        if drawn.valid is not None:
            neg_scores = tf.where(drawn.valid, neg_scores, MASKED)
        return loss_function(self.loss_name)(row_scores[:, :positives], neg_scores)


def row_ids(pos_ids, drawn):
    """int32[B, P + C1]: each row's positives, then its own candidates (``drawn.row_ids``) if any."""
    import tensorflow as tf

    return pos_ids if drawn.row_ids is None else tf.concat([pos_ids, drawn.row_ids], axis=1)


def lookup(table, ids, shared_ids):
    """:meth:`TagTable.lookup` of a batch's per-row ids (int32[B, C]) and shared ids (int32[C2] or None) at once.

    Returns:
        ``(unique_ids, rows, index, shared_index)``: ``rows[index]`` are the vectors of ``ids``,
        ``rows[shared_index]`` those of ``shared_ids`` (None without).
    """
    import tensorflow as tf

    if shared_ids is None:
        return (*table.lookup(ids), None)
    flat = tf.reshape(ids, [-1])
    unique_ids, rows, index = table.lookup(tf.concat([flat, shared_ids], axis=0))
    count = tf.size(flat)
    return unique_ids, rows, tf.reshape(index[:count], tf.shape(ids)), index[count:]


def make_train_step(strategy, projection, optimizer, table, objective):
    """A ``tf.function`` running one synchronous step on every replica; returns the global mean loss.

    Args:
        strategy: from :func:`distribution`; projection: g (Keras); optimizer: Keras, for g.
        table: :class:`model.projection.TagTable`.
        objective: an :class:`Objective`, or a loss name (a key of ``projection.LOSSES``) for Option
            II's: the batch's own neg_ids.

    The step takes a batch dict (feature float16[B, D], pos_ids int32[B, P], neg_ids int32[B, K],
    own_ids int32[B, M] for the methods that read it) as ``strategy.distribute_datasets_from_function``
    yields it.
    """
    import tensorflow as tf
    from model.projection import merge_rows

    objective = Objective(objective) if isinstance(objective, str) else objective
    vocab_size = int(table.vectors.shape[0])
    distributed = strategy.num_replicas_in_sync > 1

    def replica_step(batch):
        pos_ids = batch["pos_ids"]
        drawn = objective.method.draw(batch, vocab_size)
        unique_ids, rows, index, shared_index = lookup(table, row_ids(pos_ids, drawn), drawn.shared_ids)
        with tf.GradientTape() as tape:
            tape.watch(rows)
            image_vectors = projection(tf.cast(batch["feature"], tf.float32), training=True)
            per_image = objective.per_image_loss(image_vectors, pos_ids, drawn, tf.gather(rows, index),
                                                 None if shared_index is None else tf.gather(rows, shared_index))
            loss = tf.nn.compute_average_loss(per_image)               # sum / global batch
        if table.frozen:
            gradients = tape.gradient(loss, projection.trainable_variables)
        else:
            gradients, row_gradients = tape.gradient(loss, [projection.trainable_variables, rows])
            row_gradients = tf.convert_to_tensor(row_gradients)
            if distributed:
                # Every replica applies every replica's rows, so the CPU copies stay identical.
                context = tf.distribute.get_replica_context()
                unique_ids, row_gradients = merge_rows(context.all_gather(unique_ids, axis=0),
                                                       context.all_gather(row_gradients, axis=0))
            table.apply_gradients(unique_ids, row_gradients)
        optimizer.apply_gradients(zip(gradients, projection.trainable_variables))
        return loss

    @tf.function(reduce_retracing=True)
    def train_step(batch):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_step, args=(batch,)), axis=None)

    return train_step


# --- validation --------------------------------------------------------------------------------

def validate(projection, tag_vectors: np.ndarray, tag_bias: np.ndarray, validation: dict, objective) -> dict:
    """Loss, P@5, R@5 and per-tag F1 on the validation set (see :func:`model.data.validation_set`).

    Returns:
        ``{"val_loss", "val_p_at_5", "val_r_at_5", "val_f1"}``: the mean per-image loss of the
        :class:`Objective` on the set's fixed draws (:func:`validation_loss`), and
        :func:`ranking_figures` of the TOP_K best tags of the whole table by score + tag_bias
        (:func:`model.projection.tag_bias`).
    """
    from model import metrics

    image_vectors = model_data.embed(projection, validation["feature"])
    top = metrics.top_k_tags(image_vectors, tag_vectors, TOP_K, tag_bias)
    figures = ranking_figures(top, validation, len(tag_vectors))
    return {"val_loss": validation_loss(objective, image_vectors, tag_vectors, validation),
            **{f"val_{key}": value for key, value in figures.items()}}


def validation_loss(objective: Objective, image_vectors: np.ndarray, tag_vectors: np.ndarray,
                    validation: dict) -> float:
    """The mean per-image loss over the validation set, in batches of ``objective.batch_size`` rows
    drawn as a training step draws them (validation's pos_ids, neg_ids and own_ids)."""
    import tensorflow as tf

    losses = []
    for start in range(0, len(image_vectors), objective.batch_size):
        batch = {name: tf.constant(validation[name][start:start + objective.batch_size])
                 for name in ("pos_ids", "neg_ids", "own_ids")}
        drawn = objective.method.draw(batch, len(tag_vectors))
        shared = None if drawn.shared_ids is None else tf.gather(tag_vectors, drawn.shared_ids)
        losses.append(objective.per_image_loss(
            tf.constant(image_vectors[start:start + objective.batch_size]), batch["pos_ids"], drawn,
            tf.gather(tag_vectors, row_ids(batch["pos_ids"], drawn)), shared))
    return float(tf.reduce_mean(tf.concat(losses, axis=0))) if losses else float("nan")


def ranking_figures(top: np.ndarray, validation: dict, vocab_size: int) -> dict:
    """``{"p_at_5", "r_at_5", "f1"}`` of ranked tags (int[N, TOP_K]) against the validation set's true tags:
    per-image precision and recall (model.metrics.precision_recall_at_k), per-tag F1 (per_tag_metrics)."""
    from model import metrics

    precision, recall = metrics.precision_recall_at_k(top, validation["offsets"], validation["tag_ids"])
    per_tag = metrics.per_tag_metrics(top, validation["offsets"], validation["tag_ids"], vocab_size)
    return {"p_at_5": precision, "r_at_5": recall, "f1": per_tag["f1"]}


# --- outputs -----------------------------------------------------------------------------------

def scalar(name: str, value: float, step: int) -> None:
    """Write one TensorBoard scalar to the default summary writer.

    ``tf.summary.scalar`` lives in the tensorboard package, which tensorflow-cpu does not install;
    this writes the same event (a tensor tagged for TensorBoard's scalars plugin) with core TF.
    """
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR)
    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step, metadata=metadata)


def plot_history(history: list[dict]) -> bytes:
    """A PNG of the per-epoch history: train/validation loss, and P@5/R@5/per-tag F1 against the popularity baseline."""
    from matplotlib.figure import Figure   # the Agg canvas, no display and no pyplot state
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    losses, ranks = figure.subplots(1, 2)
    losses.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    losses.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    losses.set(xlabel="epoch", ylabel="loss per image", title="loss")
    for key, label, color in (("p_at_5", "P@5", "C0"), ("r_at_5", "R@5", "C1"), ("f1", "per-tag F1", "C2")):
        if f"val_{key}" not in history[-1]:
            continue     # a history from before per-tag F1 was logged
        ranks.plot(epochs, [h.get(f"val_{key}", float("nan")) for h in history], "o-", color=color, label=label)
        ranks.axhline(history[-1][f"popularity_{key}"], color=color, linestyle="--",
                      label=f"{label} popularity baseline")
    best = best_epoch(history)
    if best.get("val_f1") is not None:
        ranks.axvline(best["epoch"], color="grey", linestyle=":", label=f"best (exported): epoch {best['epoch']}")
    ranks.set(xlabel="epoch", title="validation")
    for axes in (losses, ranks):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend()
        axes.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def best_epoch(history: list[dict]) -> dict:
    """The history entry with the highest validation per-tag F1 (the earliest of equals); {} if none."""
    scored = [h for h in history if h.get("val_f1") is not None]
    return max(scored, key=lambda h: (h["val_f1"], -h["epoch"])) if scored else {}


def patience_spent(history: list[dict], patience: int) -> bool:
    """Whether the last ``patience`` epochs of the history have not beaten the best one (never when patience is 0)."""
    best = best_epoch(history)
    return bool(patience and best and history[-1]["epoch"] - best["epoch"] >= patience)


def write_outputs(root: str, projection, tag_vectors: np.ndarray, tag_bias: np.ndarray, history: list[dict]) -> None:
    """reports/train.png, and projection.keras, tag_vectors.npy, tag_bias.npy (unless projection is None)
    under ROOT, each replaced atomically."""
    storage.write_bytes(storage.join(root, "reports", "train.png"), plot_history(history))
    if projection is None:
        return
    model_data.write_projection(root, projection)
    model_data.write_array(root, "tag_vectors", tag_vectors)
    model_data.write_array(root, "tag_bias", tag_bias)


def last_figures(history: list[dict]) -> dict:
    """The latest epoch's train_loss, val_loss, val_p_at_5, val_r_at_5 and val_f1 (None before the first)."""
    last = history[-1] if history else {}
    return {key: last.get(key) for key in ("train_loss", "val_loss", "val_p_at_5", "val_r_at_5", "val_f1")}


# --- build or restore --------------------------------------------------------------------------

@dataclass
class Setup:
    """Where this process trains: the run root URI, :func:`parameters`, and its place among the workers."""
    root: str
    params: dict
    strategy: object          # from :func:`distribution`
    worker: int               # 0 is the chief
    workers: int
    model_dir: str            # :func:`local_model_dir`

    @property
    def chief(self) -> bool:
        """Whether this worker validates and writes progress, outputs and logs (worker 0)."""
        return self.worker == 0


@dataclass
class Inputs:
    """What does not change between epochs (:func:`read_inputs`).

    Attributes:
        initial: float32[V, d] the starting tag table (wordvec/); bias: float32[V] tag_bias.
        validation: :func:`model.data.validation_set`; feature_dim: D.
        popularity: the popularity baseline on the validation set, ``popularity_p_at_5``, ``_r_at_5``, ``_f1``.
        objective: the :class:`Objective` of the configured sampling method.
    """
    initial: np.ndarray
    bias: np.ndarray
    validation: dict
    feature_dim: int
    popularity: dict
    objective: Objective


@dataclass
class State:
    """The model being trained and its bookkeeping (:func:`build`).

    Attributes:
        projection: g (Keras); optimizer: Adam, for g; table: model.projection.TagTable.
        step_var, epoch_var: the checkpointed step and last finished epoch (int64 tf.Variable);
        manager: the tf.train.CheckpointManager; train_step: :func:`make_train_step`'s function;
        writer: TensorBoard's (a no-op writer on other workers than the chief);
        best: the chief's CheckpointManager of the exported epoch's g and table (None elsewhere);
        history: one dict per finished epoch (progress.json's); step: steps trained so far.
    """
    projection: object
    optimizer: object
    table: object
    step_var: object
    epoch_var: object
    manager: object
    train_step: object
    writer: object
    best: object
    history: list = field(default_factory=list)
    step: int = 0


def start(config: dict, root: str) -> Setup:
    """Check the configuration and place this process among the workers."""
    params = parameters(config)
    keep_freed_memory()
    root = storage.to_uri(root)
    strategy, worker, workers = distribution()
    return Setup(root, params, strategy, worker, workers, local_model_dir(root, params["model_dir"]))


def read_inputs(root: str, params: dict, workers: int = 1) -> Inputs:
    """The starting tag table, the tag offsets and objective of the sampling method, the validation set and
    the popularity baseline on it (``workers``: processes sharing each global batch)."""
    from model import baselines, data

    vocab = data.read_vocab(root)
    sampling.check_vocabulary(params, vocab.num_rows)
    initial = wordvec_data.read_tag_vectors(root, vocab.num_rows)
    shares = data.train_tag_shares(root, vocab)
    bias, objective = sampling_terms(params, vocab.column("pos_weight").to_numpy(), shares,
                                     params["batch_size"] // workers)
    positives, negatives = objective.method.written(params["positives"], params["negatives"])
    validation = data.validation_set(root, vocab, limit=params["validation_images"], seed=params["seed"],
                                     positives=positives, negatives=negatives, user_cap=params["validation_user_cap"],
                                     exclude_own_tags=params["exclude_own_tags"])
    if len(validation["photo_id"]) == 0:
        raise Im2vecError(f"no validation image has both tags and features under {root}: check the "
                          "validation split (validation_fraction) and the features stage")
    feature_dim = validation["feature"].shape[1]
    popular = baselines.popularity_top_k(shares.image, len(validation["photo_id"]), TOP_K)
    popularity = {f"popularity_{key}": value
                  for key, value in ranking_figures(popular, validation, vocab.num_rows).items()}
    log(f"{vocab.num_rows:,} tags (d={initial.shape[1]}), {len(validation['photo_id']):,} validation images, "
        f"features D={feature_dim}; popularity baseline P@5 {popularity['popularity_p_at_5']:.4f} "
        f"R@5 {popularity['popularity_r_at_5']:.4f} per-tag F1 {popularity['popularity_f1']:.4f}; sampling "
        f"{params['sampling']}" + (" with the log-Q correction" if params["logq_correction"] else ""))
    return Inputs(initial, bias, validation, feature_dim, popularity, objective)


def sampling_terms(params: dict, pos_weight: np.ndarray, shares: sampling.TagShares,
                   batch_rows: int) -> tuple[np.ndarray, Objective]:
    """``(tag_bias float32[V], objective)`` for the configured sampling method (pos_weight: vocab/'s, float64[V]).

    Both come from Q_t, how often the method offers tag t among a row's candidates
    (pipeline.sampling.expected_candidates; ``batch_rows``: rows per replica batch): the log-Q
    correction subtracts log Q_t from every score, and ranking undoes ``tag_bias_strength`` of the
    lift log(pos_weight_t / Q_t) that sampling gives rare tags, with Q flat where the scores carry
    none (the full softmax, the log-Q correction).
    """
    from model.projection import tag_bias

    method = sampling.method(params)
    positives, negatives = method.written(params["positives"], params["negatives"])
    expected = sampling.expected_candidates(method, shares, positives, negatives, batch_rows)
    log_q = np.log(expected).astype(np.float32) if params["logq_correction"] else None
    offered = np.ones_like(expected) if params["logq_correction"] else expected
    bias = tag_bias(offered, pos_weight, params["tag_bias_strength"])
    return bias, Objective(params["loss"], method, log_q, batch_rows)


def build(setup: Setup, inputs: Inputs) -> State:
    """g on the default device (a GPU if any) and the table on the CPU, restored from the last checkpoint if any."""
    import keras
    import tensorflow as tf
    from model.projection import TagTable, build_projection

    params = setup.params
    keras.utils.set_random_seed(params["seed"])
    with setup.strategy.scope():
        projection = build_projection(inputs.feature_dim, inputs.initial.shape[1], params["hidden_sizes"])
        optimizer = keras.optimizers.Adam(params["learning_rate"])
        optimizer.build(projection.trainable_variables)
    table = TagTable(inputs.initial, params["tag_learning_rate"])
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)    # last finished epoch
    tracked = {"projection": projection, "optimizer": optimizer, "tag_vectors": table.vectors,
               "step": step_var, "epoch": epoch_var}
    if table.accumulator is not None:
        tracked["tag_accumulator"] = table.accumulator
    checkpoint = tf.train.Checkpoint(**tracked)
    checkpoint_dir = os.path.join(setup.model_dir, "checkpoints", *([] if setup.chief else [f"worker-{setup.worker}"]))
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=KEEP_CHECKPOINTS)
    if manager.latest_checkpoint:
        try:
            checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as err:
            raise Im2vecError(f"cannot resume from {manager.latest_checkpoint}: it was made with other settings "
                              f"(hidden_sizes, tag_learning_rate 0 or not, vocabulary): {err}; delete "
                              f"{checkpoint_dir} to start over") from None
        log(f"resumed from {manager.latest_checkpoint}: epoch {int(epoch_var)} finished, step {int(step_var)}")
    best = tf.train.CheckpointManager(tf.train.Checkpoint(projection=projection, tag_vectors=table.vectors),
                                      os.path.join(checkpoint_dir, "best"), max_to_keep=1,
                                      checkpoint_name="epoch") if setup.chief else None
    # A finished model's manifest keeps a copy of the history, for when progress.json is damaged.
    recorded = model_data.read_progress(setup.root).get("history") or \
        (model_data.DATASET.manifest(setup.root) or {}).get("history", [])
    history = [h for h in recorded if h["epoch"] <= int(epoch_var)]
    train_step = make_train_step(setup.strategy, projection, optimizer, table, inputs.objective)
    writer = tf.summary.create_file_writer(os.path.join(setup.model_dir, "logs")) if setup.chief else \
        tf.summary.create_noop_writer()
    return State(projection, optimizer, table, step_var, epoch_var, manager, train_step, writer, best, history,
                 int(step_var))


def export_again(setup: Setup, state: State, inputs: Inputs) -> None:
    """On the chief, before training: write again each file ROOT/model/'s manifest lists that is missing or
    of another size: g and the table from the best epoch's checkpoint (checkpoints/best/), the tag bias
    from the vocabulary, progress.json from the history.

    Nothing to do when no checkpoint was restored (training starts over and writes every file), nor
    for an extra file (the data guard says to delete it). The files left whole are not touched: a
    new projection.keras (same weights, other bytes) makes index/ look made by another model.

    Raises:
        Im2vecError: (one line; nothing written) the best epoch's weights or the history are kept
            nowhere else: train from the start.
    """
    import tensorflow as tf
    from model.projection import build_projection

    folder = model_data.DATASET.uri(setup.root)
    listed = model_data.DATASET.listed(model_data.DATASET.manifest(setup.root)) or {}
    found = storage.list_data_files(folder)
    damaged = {name for name, size in listed.items() if found.get(name) != size}
    if not damaged or int(state.epoch_var) == 0:
        return
    best, kept = best_epoch(state.history).get("epoch"), state.best.latest_checkpoint
    weights = {model_data.PROJECTION, model_data.TAG_VECTORS} & damaged
    if best is None or weights and (kept is None or os.path.basename(kept) != f"epoch-{best}"):
        lost = "its history (progress.json) is lost" if best is None else \
            f"epoch {best}'s weights are not under {state.best.directory} (trained before im2vec kept them)"
        raise Im2vecError(f"{storage.join(folder, sorted(damaged)[0])} is missing or not the size its manifest "
                          f"says, and im2vec cannot write it again: {lost}; delete {state.manager.directory} and "
                          "run `im2vec train` to train from the start")
    if weights:
        projection = build_projection(inputs.feature_dim, inputs.initial.shape[1], setup.params["hidden_sizes"])
        tag_vectors = tf.Variable(inputs.initial, trainable=False)
        tf.train.Checkpoint(projection=projection, tag_vectors=tag_vectors).read(kept).assert_existing_objects_matched()
        if model_data.PROJECTION in damaged:
            model_data.write_projection(setup.root, projection)
        if model_data.TAG_VECTORS in damaged:
            model_data.write_array(setup.root, "tag_vectors", tag_vectors.numpy())
    if model_data.TAG_BIAS in damaged:
        model_data.write_array(setup.root, "tag_bias", inputs.bias)
    if model_data.PROGRESS in damaged:
        model_data.write_progress(setup.root, progress_record(state, inputs, int(state.epoch_var)))
    log(f"wrote {', '.join(sorted(damaged))} under {folder} again (missing or not the size the manifest says), "
        f"the model of epoch {best}" + (f" from {kept}" if weights else ""))


def save(setup: Setup, state: State, inputs: Inputs, epoch_done: int) -> None:
    """Checkpoint (every worker) and, on the chief, replace ROOT/model/progress.json and the consumer's report."""
    state.step_var.assign(state.step)
    state.epoch_var.assign(epoch_done)
    state.manager.save(checkpoint_number=state.step)
    if setup.chief:
        model_data.write_progress(setup.root, progress_record(state, inputs, epoch_done))
        if setup.params["consumer"]:
            consumers.report(setup.root, setup.params["consumer"], epoch_done, state.step)


def progress_record(state: State, inputs: Inputs, epoch_done: int) -> dict:
    """progress.json's content once epoch ``epoch_done`` is finished (0: none yet): module docstring."""
    return {"epoch": epoch_done, "step": state.step, "best_epoch": best_epoch(state.history).get("epoch"),
            **last_figures(state.history), **inputs.popularity,
            "history": state.history, "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")}


# --- one epoch ---------------------------------------------------------------------------------

def epoch_input(context, *, uri: str, manifest: dict, params: dict, feature_dim: int, seed: int):
    """One worker's batches of an epoch (the callback of ``strategy.distribute_datasets_from_function``).

    Args:
        context: tf.distribute.InputContext; uri, manifest: the epoch's folder and manifest.
        seed: orders the row groups, the same on every worker (so the shards are disjoint).

    Returns:
        :func:`model.data.epoch_dataset` of this worker's shard; with several workers, full batches
        only and repeated: the workers must run the same number of steps, a short shard starts over.
    """
    import tensorflow as tf
    from model import data

    batch_size = context.get_per_replica_batch_size(params["batch_size"])
    sharded = context.num_input_pipelines > 1
    dataset = data.epoch_dataset(
        uri, feature_dim=feature_dim, positives=int(manifest["positives"]), negatives=int(manifest["negatives"]),
        own_tags=int(manifest.get("own_tags") or 0) if sampling.method(params).own_ids else 0,
        batch_size=batch_size, shuffle_buffer=params["shuffle_buffer"], seed=seed,
        cur_shard=context.input_pipeline_id if sharded else None,
        shard_count=context.num_input_pipelines if sharded else None, workers=params["reader_workers"])
    return dataset.filter(lambda b: tf.shape(b["pos_ids"])[0] == batch_size).repeat() if sharded else dataset


def train_epoch(setup: Setup, state: State, inputs: Inputs, epoch: int, manifest: dict) -> tuple[int, float, list]:
    """Train one pass over epoch ``epoch`` (its manifest given), checkpointing every checkpoint_steps steps.

    Returns:
        ``(rows, seconds, losses)``: rows trained (by this worker, or the global batch times the
        steps with several workers), wall-clock seconds, and each step's global mean loss (tensors).
    """
    import tensorflow as tf

    params = setup.params
    batches = setup.strategy.distribute_datasets_from_function(functools.partial(
        epoch_input, uri=epochs_data.uri(setup.root, epoch), manifest=manifest, params=params,
        feature_dim=inputs.feature_dim, seed=(params["seed"] * 1_000_003 + epoch) % 2 ** 31))
    steps = int(manifest["rows_out"]) // params["batch_size"] if setup.workers > 1 else None
    started, losses, window, rows = time.time(), [], [], 0
    iterator = iter(batches)
    while steps is None or len(losses) < steps:
        try:
            batch = next(iterator)
        except StopIteration:
            break
        loss = state.train_step(batch)
        state.step += 1
        rows += params["batch_size"] if setup.workers > 1 else int(batch["pos_ids"].shape[0])
        losses.append(loss)
        window.append(loss)
        if state.step % LOG_STEPS == 0:
            with state.writer.as_default():
                scalar("train/loss", float(tf.add_n(window)) / len(window), state.step)
            window = []
        if state.step % params["checkpoint_steps"] == 0:
            save(setup, state, inputs, epoch - 1)
            log(f"epoch {epoch}: step {state.step}, {rows:,} rows ({rows / (time.time() - started):,.0f} "
                f"examples/s), loss {float(loss):.4f}; checkpoint saved")
    return rows, time.time() - started, losses


# --- the end of an epoch -----------------------------------------------------------------------

def end_epoch(setup: Setup, state: State, inputs: Inputs, epoch: int, rows: int, seconds: float,
              losses: list) -> None:
    """Validate (every worker), log and write the outputs (the chief), and checkpoint with the epoch finished.

    The model files are written only when the epoch beats every earlier one's validation per-tag F1.
    """
    import tensorflow as tf

    train_loss = float(tf.add_n(losses)) / len(losses) if losses else float("nan")
    # Every worker validates (a second at most): the early-stopping decision must be the same on all.
    scores = validate(state.projection, state.table.vectors.numpy(), inputs.bias, inputs.validation,
                      inputs.objective)
    improved = scores["val_f1"] > best_epoch(state.history).get("val_f1", -1.0)
    state.history.append({"epoch": epoch, "step": state.step, "train_loss": train_loss, **scores,
                          **inputs.popularity, "examples_per_second": rows / max(seconds, 1e-9)})
    if setup.chief:
        with state.writer.as_default():
            for name, value in {"train/epoch_loss": train_loss,
                                **{f"validation/{k[4:]}": v for k, v in scores.items()}}.items():
                scalar(name, value, state.step)
        state.writer.flush()
        write_outputs(setup.root, state.projection if improved else None, state.table.vectors.numpy(), inputs.bias,
                      state.history)
        if improved:
            state.best.save(checkpoint_number=epoch)
        log(f"epoch {epoch}: {rows:,} rows in {seconds:.1f}s ({rows / max(seconds, 1e-9):,.0f} examples/s), "
            f"step {state.step}, loss {train_loss:.4f}, validation loss {scores['val_loss']:.4f} "
            f"P@5 {scores['val_p_at_5']:.4f} R@5 {scores['val_r_at_5']:.4f} per-tag F1 {scores['val_f1']:.4f}"
            + (" (best so far: exported)" if improved else f" (best: epoch {best_epoch(state.history)['epoch']})"))
    save(setup, state, inputs, epoch)


def finish(setup: Setup, state: State, inputs: Inputs, trained: dict, epochs: range, started: float) -> dict:
    """The run's summary; the chief writes it as ROOT/model/_manifest.json (see :func:`run`).

    Args:
        trained: ``{"rows", "seconds"}`` trained by this run; epochs: the epochs it trained.
    """

    final, initial = state.table.vectors.numpy(), inputs.initial
    cosine = float(np.mean(np.sum(final * initial, 1) / np.maximum(
        np.linalg.norm(final, axis=1) * np.linalg.norm(initial, axis=1), 1e-12)))
    best = best_epoch(state.history)
    summary = {"epoch": int(state.epoch_var), "step": state.step, "best_epoch": best.get("epoch"),
               **last_figures([best]), **inputs.popularity,
               "examples_per_second": trained["rows"] / trained["seconds"] if trained["seconds"] else None,
               "tag_cosine_to_initial": cosine, "workers": setup.workers, "model_dir": setup.model_dir,
               "history": state.history}
    if not setup.chief:
        return summary
    read = [storage.join(setup.root, name) for name in ("wordvec", "vocab", "tagged", "features")] + \
        [epochs_data.uri(setup.root, e) for e in epochs if e <= int(state.epoch_var)]
    return storage.write_manifest(storage.join(setup.root, "model"), "train", rows_in=trained["rows"],
                                  rows_out=trained["rows"], rows_rejected=0, parameters=setup.params, inputs=read,
                                  started=started, **summary)


# --- the loop ----------------------------------------------------------------------------------

def run(config: dict, root: str) -> dict:
    """Train until epoch ``epochs`` is finished or ``patience`` epochs in a row have not beaten the best one,
    resuming from the last checkpoint if there is one.

    Args:
        config: the run configuration (:data:`KEYS`); root: the run root URI.

    Returns:
        The manifest written to ROOT/model/_manifest.json: rows_in = rows_out = training rows read
        by this run (every row is one example; rows_rejected = 0), ``epoch`` (the last trained),
        ``best_epoch`` (the one exported), ``step``, the best epoch's validation metrics, the popularity
        baseline, ``examples_per_second`` and ``tag_cosine_to_initial``. Non-chief workers return the
        same fields without writing it.
    """
    started = time.time()
    setup = start(config, root)
    inputs = read_inputs(setup.root, setup.params, setup.workers)
    state = build(setup, inputs)
    if setup.chief:
        export_again(setup, state, inputs)
        storage.delete(storage.join(model_data.DATASET.uri(setup.root), storage.MANIFEST))   # training: incomplete
    epochs = range(int(state.epoch_var) + 1, setup.params["epochs"] + 1)
    trained = {"rows": 0, "seconds": 0.0}
    consumer = setup.params["consumer"] if setup.chief else ""   # the chief reports for every worker
    for epoch in epochs:
        if patience_spent(state.history, setup.params["patience"]):
            best = best_epoch(state.history)
            log(f"early stop before epoch {epoch}: validation per-tag F1 has not improved for "
                f"{setup.params['patience']} epochs; the model exported is epoch {best['epoch']}'s "
                f"(per-tag F1 {best['val_f1']:.4f})")
            break
        manifest = reader.wait_for_epoch(setup.root, epoch, consumer=consumer or None,
                                         poll_seconds=setup.params["train_poll_seconds"], log=log)
        sampling.check_epoch(setup.params, manifest, epochs_data.uri(setup.root, epoch))
        if manifest["feature_dim"] != inputs.feature_dim:
            raise Im2vecError(f"epoch {epoch} has features of size {manifest['feature_dim']}, the validation "
                              f"set {inputs.feature_dim}: sample again after `im2vec features`")
        rows, seconds, losses = train_epoch(setup, state, inputs, epoch, manifest)
        trained = {"rows": trained["rows"] + rows, "seconds": trained["seconds"] + seconds}
        end_epoch(setup, state, inputs, epoch, rows, seconds, losses)
    return finish(setup, state, inputs, trained, epochs, started)
