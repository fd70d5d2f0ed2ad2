"""jobs.vocab's tag lookup (tag_ids_of, vocab_index), without Spark."""
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jobs import vocab


def test_tag_ids_of_maps_known_tags_sorted_and_drops_the_rest():
    index = pd.Index(["sunset", "beach", "dog", "café"])
    tags = pa.array([["dog", "sunset", "unknown"], [], None, ["café", None, "beach", "dog"], ["nope"]],
                    pa.list_(pa.string()))
    assert vocab.tag_ids_of(tags, index).to_pylist() == [[0, 2], [], [], [1, 2, 3], []]


def test_tag_ids_of_a_sliced_batch_and_an_empty_one():
    index = pd.Index([f"t{i}" for i in range(1000)])
    tags = pa.array([["t5", "t999"], ["t1"], ["x", "t0"]], pa.list_(pa.string()))
    assert vocab.tag_ids_of(tags.slice(1), index).to_pylist() == [[1], [0]]
    assert vocab.tag_ids_of(pa.array([], pa.list_(pa.string())), index).to_pylist() == []
    assert vocab.tag_ids_of(pa.array([[None]], pa.list_(pa.string())), index).to_pylist() == [[]]


def test_vocab_index_reads_the_folder_in_tag_id_order(tmp_path):
    folder = tmp_path / "vocab"
    folder.mkdir()
    pq.write_table(pa.table({"tag_id": pa.array([2, 0], pa.int32()), "tag": ["c", "a"]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"tag_id": pa.array([1], pa.int32()), "tag": ["b"]}), folder / "part-1.parquet")
    assert list(vocab.vocab_index("file://" + str(folder))) == ["a", "b", "c"]
