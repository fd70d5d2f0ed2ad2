"""The bz2 figures of bench_bz2.py and bench_ladder.py's bz2 rung: arithmetic, text, disk estimate."""
import bz2
import math

from tests.benchmarks import bench_ladder, bz2_rate

# 120 MB of bzip2; the stage on 2 cores: 100 s, 180 CPU s; bzip2 -dc: 50 s, 48 CPU s.
FIGURES = dict(compressed_bytes=120_000_000, cores=2, clean_seconds=100.0, clean_cpu=180.0,
               bzip2_seconds=50.0, bzip2_cpu=48.0, tasks=2, rows=1_000_000)


def test_compare_divides_the_stage_by_its_cores_and_bzip2_by_one():
    f = bz2_rate.compare(**FIGURES)
    assert math.isclose(f["clean_mb_per_s_per_core"], 0.6)     # 120 MB / 100 s / 2 cores
    assert math.isclose(f["bzip2_mb_per_s_per_core"], 2.4)     # 120 MB / 50 s
    assert math.isclose(f["ratio_wall"], 0.25)
    assert math.isclose(f["clean_mb_per_cpu_s"], 120 / 180)
    assert math.isclose(f["bzip2_mb_per_cpu_s"], 2.5)
    assert math.isclose(f["ratio_cpu"], 48 / 180)
    assert math.isclose(f["clean_rows_per_s"], 10_000)
    assert f["tasks"] == 2 and f["compressed_bytes"] == 120_000_000


def test_compare_gives_nan_for_a_zero_time():
    f = bz2_rate.compare(**{**FIGURES, "bzip2_cpu": 0.0})
    assert math.isnan(f["bzip2_mb_per_cpu_s"]) and math.isnan(f["ratio_cpu"])
    assert math.isclose(f["ratio_wall"], 0.25)


def test_describe_states_both_rates_and_the_ratios():
    bzip2_line, clean_line, ratio_line = bz2_rate.describe(bz2_rate.compare(**FIGURES))
    assert bzip2_line.startswith("bzip2 -dc (1 core):") and " 2.40 compressed MB/s per core" in bzip2_line
    assert "2.50 MB per CPU s" in bzip2_line
    assert clean_line.startswith("clean stage (2 cores, 2 tasks):") and " 0.60 compressed MB/s per core" in clean_line
    assert "1,000,000 rows, 10,000 rows/s" in clean_line
    assert "0.25x (wall), 0.27x (CPU)" in ratio_line and "120.0 MB of bzip2" in ratio_line


def test_compress_writes_what_bzip2_dc_reads_back(tmp_path):
    plain = tmp_path / "rows.tsv"
    plain.write_bytes(b"".join(b"%d\tsome tags,more\n" % i for i in range(50_000)))
    size = bz2_rate.compress(str(plain), str(tmp_path / "rows.tsv.bz2"), level=1)
    assert size == (tmp_path / "rows.tsv.bz2").stat().st_size < plain.stat().st_size
    assert bz2.decompress((tmp_path / "rows.tsv.bz2").read_bytes()) == plain.read_bytes()
    wall, cpu = bz2_rate.bzip2_rate(str(tmp_path / "rows.tsv.bz2"))
    assert wall > 0 and cpu >= 0


def rung(rows, bz2=False):
    """A finished rung's records as results.json holds them (only the fields the tables read)."""
    records = [{"stage": stage, "rows": rows, "seconds": 10.0, "cpu": 15.0, "cores": 2, "rung": rows,
                "disk_peak": 900 * rows, "shuffle_write": 50 * rows if stage == "vocab" else 0}
               for stage in ("synth", "parse", "clean", "vocab", "sample")]
    records[3]["vocab_size"] = records[3]["distinct_tags"] = 1000
    if bz2:
        records += [{"stage": "compress", "rows": rows, "seconds": 30.0, "cpu": 30.0, "cores": 2, "rung": rows,
                     "disk_peak": 900 * rows, "output_bytes": 120 * rows},
                    {"stage": "bzip2-dc", "rows": rows, "seconds": 50.0, "cpu": 48.0, "cores": 2, "rung": rows,
                     "disk_peak": 900 * rows, "compressed_bytes": 120 * rows},
                    {"stage": "clean-bz2", "rows": rows, "seconds": 100.0, "cpu": 180.0, "cores": 2, "rung": rows,
                     "disk_peak": 900 * rows, "compressed_bytes": 120 * rows, "tasks": 2}]
    return records


def test_ladder_figures_come_from_the_bz2_rung_only():
    assert bench_ladder.bz2_figures(rung(1_000_000)) is None
    assert bench_ladder.bz2_figures(rung(1_000_000, bz2=True)) == bz2_rate.compare(**FIGURES)


def test_ladder_report_prints_the_bz2_lines_of_the_bz2_rung(capsys):
    bench_ladder.summary({1_000_000: rung(1_000_000, bz2=True), 4_000_000: rung(4_000_000)})
    bz2_lines = [line for line in capsys.readouterr().out.splitlines() if " bz2: " in line]
    assert len(bz2_lines) == 3
    assert "0.25x (wall), 0.27x (CPU)" in bz2_lines[2]


def test_ladder_disk_counts_the_bz2_file_at_the_bz2_rung_only():
    assert bench_ladder.disk_needed(1_000_000, 700) == 700_000_000
    assert bench_ladder.disk_needed(1_000_000, 700, bz2=True) == (700 + bench_ladder.BZ2_BYTES_PER_ROW) * 1_000_000
    # the next rung's estimate leaves the .bz2 file out: disk peak + shuffle - compressed bytes
    assert bench_ladder.plain_disk(rung(1_000_000, bz2=True)) == (900 + 50 - 120) * 1_000_000
    assert bench_ladder.plain_disk(rung(1_000_000)) == (900 + 50) * 1_000_000
