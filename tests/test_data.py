"""CelebA fetch/prepare and the synthetic CelebA, on real (tiny) synthetic archives.

Everything runs the real code on real files: `ocbench data ...` as a user runs it (the `cli` fixture),
or the library functions where a test must point the md5 checks at a small file instead of the 1.4 GB
zip (the md5s are module constants for that reason).
"""

import hashlib
import io
import json
import os
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ocbench import config as config_mod
from ocbench import data, synth
from ocbench.download import Expected
from ocbench.errors import OcbenchError

N, SEED = 40, 7


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A synthetic CelebA (zip + partition file), shared read-only by the tests of this module."""
    root = tmp_path_factory.mktemp("synth")
    zip_path, part = synth.write_synthetic(root / "img_align_celeba.zip", None, N, SEED, progress=False)
    return zip_path, part


def write_config(tmp_path: Path, **data_keys) -> Path:
    """A config overlay whose data section points into tmp_path; `data_keys` override it."""
    d = {
        "images": str(tmp_path / "img_align_celeba.zip"),
        "partition": str(tmp_path / "list_eval_partition.txt"),
        "prepared": str(tmp_path / "out" / "celeba128.npy"),
        **data_keys,
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"name": "test", "data": d}))
    return path


def synthetic_config(tmp_path, archive, **data_keys):
    zip_path, part = archive
    keys = {"images": str(zip_path), "partition": str(part), "synthetic": {"n": N, "seed": SEED}}
    return write_config(tmp_path, **{**keys, **data_keys})


def leftovers(folder: Path) -> list[str]:
    """Anything prepare may have left in the output folder (arrays, temporaries, JSON)."""
    return sorted(p.name for p in folder.glob("*")) if folder.exists() else []


def expected_pixels(zip_path: Path, name: str, crop, size=128, resize="bilinear") -> np.ndarray:
    """The documented recipe, computed independently: PIL crop of rows 20..197, then PIL resize."""
    with zipfile.ZipFile(zip_path) as zf:
        img = Image.open(io.BytesIO(zf.read(f"img_align_celeba/{name}"))).convert("RGB")
    assert img.size == (178, 218)
    if crop == "center":
        img = img.crop((0, 20, 178, 198))  # the centred 178x178 square: rows 20 to 197
    return np.asarray(img.resize((size, size), getattr(Image.Resampling, resize.upper())))


def assert_one_line_error(proc, *fragments, code=1):
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("ocbench: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


# --------------------------------------------------------------------------------------------------
# synth


def test_synth_is_celeba_shaped_and_deterministic(tmp_path, cli, archive):
    zip_path, part = archive
    proc = cli("data", "synth", "--out", tmp_path / "a" / "img_align_celeba.zip", "--n", N, "--seed", SEED)
    assert proc.returncode == 0, proc.stderr
    # Same seed, same bytes, whether written by the CLI or the library.
    assert (tmp_path / "a" / "img_align_celeba.zip").read_bytes() == zip_path.read_bytes()
    assert (tmp_path / "a" / "list_eval_partition.txt").read_text() == part.read_text()

    with zipfile.ZipFile(zip_path) as zf:
        names = [n for n in zf.namelist() if n.endswith(".jpg")]
        assert names == [f"img_align_celeba/{i:06d}.jpg" for i in range(1, N + 1)]
        imgs = [np.asarray(Image.open(io.BytesIO(zf.read(n)))) for n in names[:5]]
    assert all(im.shape == (218, 178, 3) for im in imgs)
    assert len({im.tobytes() for im in imgs}) == 5  # every face differs

    lines = part.read_text().splitlines()
    assert lines[0] == "000001.jpg 0" and len(lines) == N
    codes = [int(line.split()[1]) for line in lines]
    assert codes == sorted(codes) and set(codes) == {0, 1, 2}  # train, valid, test blocks, as CelebA
    assert codes.count(0) == synth.split_sizes(N)[0] == 32

    other = tmp_path / "b" / "img_align_celeba.zip"
    synth.write_synthetic(other, None, N, SEED + 1, progress=False)
    assert other.read_bytes() != zip_path.read_bytes()


def test_synth_from_config(tmp_path, cli):
    cfg = write_config(tmp_path, synthetic={"n": 12, "seed": 0})
    proc = cli("data", "synth", "--config", cfg)
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "list_eval_partition.txt").read_text().splitlines()) == 12
    # fetch does not try the network for a synthetic config
    proc = cli("data", "fetch", "--config", cfg)
    assert proc.returncode == 0 and "nothing to fetch" in proc.stdout


@pytest.mark.parametrize("n, seed, problem", [(0, 0, "needs at least 1 image, not 0; pass --n N"),
                                               (3, -1, "is a number >= 0, not -1; pass e.g. --seed 0")])
def test_synth_of_no_images_or_a_negative_seed_is_one_line_and_writes_nothing(tmp_path, capsys, n, seed, problem):
    from ocbench.cli import main

    out = tmp_path / "x.zip"
    assert main(["data", "synth", "--out", str(out), "--n", str(n), "--seed", str(seed)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ocbench: error: ") and problem in err, err
    assert list(tmp_path.iterdir()) == []  # no empty dataset left to pass for one


# --------------------------------------------------------------------------------------------------
# prepare


def test_prepare_round_trip_matches_pil(tmp_path, cli, archive):
    cfg = synthetic_config(tmp_path, archive)
    proc = cli("data", "prepare", "--config", cfg, "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out" / "celeba128.npy"
    arr = np.load(out)
    assert arr.shape == (N, 128, 128, 3) and arr.dtype == np.uint8
    for i in (0, 1, 17, N - 1):  # file-name order, pixel for pixel the documented recipe
        np.testing.assert_array_equal(arr[i], expected_pixels(archive[0], f"{i + 1:06d}.jpg", "center"))

    meta = json.loads((tmp_path / "out" / "celeba128.json").read_text())
    assert meta["count"] == N and meta["crop"] == "center" and meta["resize"] == "bilinear"
    assert meta["split"] == "all" and meta["skipped"] == [] and meta["source_kind"] == "zip"
    assert meta["source_md5"] == data.file_md5(archive[0])
    assert meta["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()  # hashed while written
    assert leftovers(tmp_path / "out") == ["celeba128.json", "celeba128.npy"]

    # Up to date: nothing is rewritten.
    mtime = out.stat().st_mtime_ns
    proc = cli("data", "prepare", "--config", cfg)
    assert proc.returncode == 0 and "up to date" in proc.stdout
    assert out.stat().st_mtime_ns == mtime

    # Deterministic, and the same in one process as in a pool.
    cfg1 = synthetic_config(tmp_path, archive, prepared=str(tmp_path / "one" / "x.npy"))
    assert cli("data", "prepare", "--config", cfg1, "--workers", "1").returncode == 0
    np.testing.assert_array_equal(np.load(tmp_path / "one" / "x.npy"), arr)
    assert json.loads((tmp_path / "one" / "x.json").read_text())["sha256"] == meta["sha256"]


def test_data_verify_rechecks_the_prepared_array(tmp_path, cli, archive):
    cfg = synthetic_config(tmp_path, archive)
    assert cli("data", "prepare", "--config", cfg, "--workers", "2").returncode == 0
    out = tmp_path / "out" / "celeba128.npy"
    sha256 = hashlib.sha256(out.read_bytes()).hexdigest()
    proc = cli("data", "verify", "--config", cfg)
    assert proc.returncode == 0 and f"sha256 {sha256} ok" in proc.stdout, proc.stderr

    flipped = bytearray(out.read_bytes())
    flipped[-1000] ^= 1  # one bit, deep in the pixels: shape and header still fine
    out.write_bytes(flipped)
    proc = cli("data", "verify", "--config", cfg)
    assert_one_line_error(proc, f"{out} has sha256 {hashlib.sha256(flipped).hexdigest()}, not the {sha256}",
                          f"delete {out} and rerun `ocbench data prepare`")


def test_crop_null_other_size_and_split(tmp_path, cli, archive):
    cfg = synthetic_config(tmp_path, archive, crop=None, image_size=64, resize="bicubic", split="valid")
    proc = cli("data", "prepare", "--config", cfg)
    assert proc.returncode == 0, proc.stderr
    arr = np.load(tmp_path / "out" / "celeba128.npy")
    train, valid, _ = synth.split_sizes(N)
    assert arr.shape == (valid, 64, 64, 3)
    first_valid = f"{train + 1:06d}.jpg"
    np.testing.assert_array_equal(arr[0], expected_pixels(archive[0], first_valid, None, 64, "bicubic"))


def test_folder_input(tmp_path, cli, archive):
    with zipfile.ZipFile(archive[0]) as zf:
        zf.extractall(tmp_path)
    folder = tmp_path / "img_align_celeba"
    cfg = synthetic_config(tmp_path, archive, images=str(folder))
    proc = cli("data", "prepare", "--config", cfg)
    assert proc.returncode == 0, proc.stderr
    arr = np.load(tmp_path / "out" / "celeba128.npy")
    np.testing.assert_array_equal(arr[3], expected_pixels(archive[0], "000004.jpg", "center"))
    assert json.loads((tmp_path / "out" / "celeba128.json").read_text())["source_kind"] == "folder"


def test_count_check_unless_subset(tmp_path, cli, archive):
    zip_path, part = archive
    cfg = write_config(tmp_path, images=str(zip_path), partition=str(part))  # real-CelebA config
    proc = cli("data", "prepare", "--config", cfg)
    assert_one_line_error(proc, f"split 'all' has {N} images", "202,599", "data.subset: true")
    assert leftovers(tmp_path / "out") == []
    cfg = write_config(tmp_path, images=str(zip_path), partition=str(part), subset=True)
    assert cli("data", "prepare", "--config", cfg).returncode == 0


def corrupt_copy(src: Path, dst: Path, victim: str) -> None:
    """A copy of the zip in which one JPEG is cut in half (the zip itself stays valid)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            payload = zin.read(info)
            if info.filename.endswith(victim):
                payload = payload[: len(payload) // 2]
            zout.writestr(info, payload)


def test_corrupt_jpeg(tmp_path, cli, archive):
    bad_zip = tmp_path / "img_align_celeba.zip"
    corrupt_copy(archive[0], bad_zip, "000005.jpg")
    cfg = synthetic_config(tmp_path, archive, images=str(bad_zip))
    proc = cli("data", "prepare", "--config", cfg, "--workers", "2")
    assert_one_line_error(proc, "000005.jpg", "not a readable JPEG", "--skip-corrupt")
    assert leftovers(tmp_path / "out") == []

    proc = cli("data", "prepare", "--config", cfg, "--skip-corrupt")
    assert proc.returncode == 0, proc.stderr
    arr = np.load(tmp_path / "out" / "celeba128.npy")
    assert arr.shape[0] == N - 1
    np.testing.assert_array_equal(arr[3], expected_pixels(archive[0], "000004.jpg", "center"))
    np.testing.assert_array_equal(arr[4], expected_pixels(archive[0], "000006.jpg", "center"))
    meta = json.loads((tmp_path / "out" / "celeba128.json").read_text())
    assert [s["name"] for s in meta["skipped"]] == ["000005.jpg"] and meta["count"] == N - 1


def test_missing_partition(tmp_path, cli, archive):
    zip_path, _ = archive
    cfg = write_config(tmp_path, images=str(zip_path), subset=True)  # a real-CelebA config, no partition file
    proc = cli("data", "prepare", "--config", cfg)
    assert_one_line_error(proc, f"partition file {tmp_path / 'list_eval_partition.txt'} not found",
                          "ocbench data fetch", "d32c9cbf5e040fd4025c592c306e6668")
    assert leftovers(tmp_path / "out") == []


# --------------------------------------------------------------------------------------------------
# bad downloads: what Google Drive really sends, under the zip's name


HTML = (b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head>"
        b"<body>Too many users have viewed or downloaded this file recently.</body></html>")


@pytest.mark.parametrize("kind", ["html", "truncated", "wrong_size"])
def test_bad_zip(tmp_path, cli, archive, kind):
    zip_path = tmp_path / "img_align_celeba.zip"
    whole = archive[0].read_bytes()
    zip_path.write_bytes({"html": HTML, "truncated": whole[: len(whole) // 2], "wrong_size": whole}[kind])
    cfg = write_config(tmp_path, partition=str(archive[1]))
    expected = {
        "html": "is an HTML page titled 'Google Drive - Quota exceeded'",
        "truncated": "is a truncated zip",
        "wrong_size": f"is {len(whole):,} bytes, not 1,443,490,838",
    }[kind]

    if kind != "wrong_size":  # prepare refuses it too (it checks the count, not the md5)
        proc = cli("data", "prepare", "--config", cfg)
        assert_one_line_error(proc, expected, str(zip_path.resolve()))
        assert leftovers(tmp_path / "out") == []

    proc = cli("data", "fetch", "--config", cfg)
    assert_one_line_error(proc, expected, "kept it as img_align_celeba.zip.invalid",
                          f"place it at {zip_path.resolve()}", "md5 00d2c5bc6d35e252742224ab0c1e8fcb")
    assert not zip_path.exists() and (tmp_path / "img_align_celeba.zip.invalid").exists()
    assert leftovers(tmp_path / "out") == []


def test_offline_every_source_is_listed_in_one_line(tmp_path, cli):
    """No network: the user's source (nothing listening on its port) and the built-in ones (through a
    proxy nobody listens on, so no traffic leaves 127.0.0.1) all fail, in one line, nothing left behind."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mine = f"http://127.0.0.1:{port}/img_align_celeba.zip"
    proxy = "http://127.0.0.1:9"
    env = {"HTTPS_PROXY": proxy, "https_proxy": proxy, "HTTP_PROXY": proxy, "http_proxy": proxy,
           "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    proc = cli("data", "fetch", "--config", write_config(tmp_path, sources=[mine]), env=env, timeout=120)
    assert_one_line_error(proc, "could not fetch img_align_celeba.zip from any of its 3 sources",
                          f"(1) {mine}: cannot connect (Connection refused)",
                          f"(2) {data.CELEBA_ZIP_MIRRORS[0]}: cannot connect",
                          f"(3) {data.CELEBA_ZIP_MIRRORS[1]}: cannot connect",
                          f"place it at {(tmp_path / 'img_align_celeba.zip').resolve()}",
                          "md5 00d2c5bc6d35e252742224ab0c1e8fcb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]


def test_the_partition_file_is_written_byte_for_byte_without_a_download(tmp_path, cli):
    content = data.official_partition()
    # The official file's size and digests (torchvision pins the md5 and sha256), not ocbench's table.
    assert len(content) == 2_836_386
    assert hashlib.md5(content).hexdigest() == "d32c9cbf5e040fd4025c592c306e6668"
    assert hashlib.sha256(content).hexdigest() == "fc955bcb3ef8fbdf7d5640d9a8693a8431b5f2ee291a5c1449a1549e7e073fe7"
    lines = content.split(b"\r\n")
    assert lines[0] == b"000001.jpg 0" and lines[162_770] == b"162771.jpg 1" and lines[182_637] == b"182638.jpg 2"
    assert lines[-2:] == [b"202599.jpg 2", b""]  # CRLF after the last line too

    part = tmp_path / "list_eval_partition.txt"
    proxy = "http://127.0.0.1:9"  # would refuse any download attempt
    proc = cli("data", "fetch", "--config", write_config(tmp_path), "--only", "partition",
               env={"HTTPS_PROXY": proxy, "https_proxy": proxy, "NO_PROXY": "", "no_proxy": ""})
    assert proc.returncode == 0, proc.stderr
    assert part.read_bytes() == content and "md5 d32c9cbf5e040fd4025c592c306e6668" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml", "list_eval_partition.txt",
                                                          "list_eval_partition.txt.md5cache"]


def test_fetch_accepts_verified_files(tmp_path, archive, capsys):
    """With the expected size and md5s pointed at the synthetic files, fetch checks and keeps them, no download."""
    zip_path, part = archive

    def expected_of(path):
        return Expected(path.name, path.stat().st_size, data.file_md5(path))

    data.fetch_images(zip_path, False, [], expected=expected_of(zip_path))
    data.fetch_partition(part, expected=expected_of(part))
    assert capsys.readouterr().out.count("ok") == 2
    assert zip_path.exists() and zip_path.with_name(zip_path.name + ".md5cache").exists()

    # An extracted folder needs only the partition file (a folder has no md5).
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp_path)
    cfg = config_mod.load([write_config(tmp_path, images=str(tmp_path / "img_align_celeba"))])
    data.fetch(cfg)
    assert f"{N} JPEGs" in capsys.readouterr().out

    # --only partition leaves data.images alone, even a bad one (the workflow fetches each in its own rule).
    html_zip = tmp_path / "img_align_celeba.zip"
    html_zip.write_bytes(HTML)
    data.fetch(config_mod.load([write_config(tmp_path)]), only="partition")
    assert html_zip.read_bytes() == HTML

    # A file of the right size but another md5 is set aside; so is a wrong partition file of the user's.
    other = tmp_path / "other.zip"
    whole = bytearray(zip_path.read_bytes())
    whole[len(whole) // 2] ^= 1  # inside a JPEG: still a zip, same size
    other.write_bytes(whole)
    with pytest.raises(OcbenchError, match=f"has md5 .*, not {expected_of(zip_path).md5}; kept it as other.zip.invalid"):
        data.fetch_images(other, False, [], expected=expected_of(zip_path))
    bad_part = tmp_path / "list_eval_partition.txt"
    bad_part.write_text("000001.jpg 0\n")
    with pytest.raises(OcbenchError, match="is 13 bytes, not 2,836,386; kept it as list_eval_partition.txt.invalid"):
        data.fetch(config_mod.load([write_config(tmp_path, images=str(zip_path), subset=True)]))


def test_a_truncated_prepared_array_is_named_and_prepare_rebuilds_it(tmp_path, cli, archive):
    """A copy cut short: `ocbench train` and `ocbench fid stats` say which file and what rebuilds it
    (instead of numpy's 'mmap length is greater than file size'); `ocbench data prepare` does."""
    cfg = synthetic_config(tmp_path, archive)
    assert cli("data", "prepare", "--config", cfg, "--workers", "1").returncode == 0
    out = tmp_path / "out" / "celeba128.npy"
    whole = out.read_bytes()
    out.write_bytes(whole[: len(whole) // 2])

    sets = ["--set", f"paths.results={tmp_path / 'results'}", "--set", f"metrics.stats={tmp_path / 's.npz'}"]
    for command in (["train", "--run", "dcgan_oct_s0"], ["fid", "stats"]):
        proc = cli(*command, "--config", cfg, *sets)
        assert_one_line_error(proc, str(out), "truncated", "ocbench data prepare")
    proc = cli("data", "prepare", "--config", cfg, "--workers", "1")
    assert proc.returncode == 0 and "up to date" not in proc.stdout
    assert out.read_bytes() == whole


def test_a_planted_tmp_symlink_in_the_data_folder_is_not_written_through(tmp_path):
    """A member of a group-writable data folder plants list_eval_partition.txt.tmp -> the victim's
    file: fetch writes the partition file (formats.atomic_write), the victim's file stays as it was."""
    if os.geteuid() != 0:
        pytest.skip("a symlink owned by another user needs root to make (the user's own is followed)")
    victim, part = tmp_path / "thesis.txt", tmp_path / "list_eval_partition.txt"
    victim.write_text("my thesis")
    for leftover in (part.with_name(part.name + ".tmp"), part.with_name(part.name + ".md5cache.tmp")):
        leftover.symlink_to(victim)
        os.lchown(leftover, 65534, 65534)
    data.fetch_partition(part)
    assert victim.read_text() == "my thesis"
    assert part.read_bytes() == data.official_partition() and not part.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list_eval_partition.txt",
                                                          "list_eval_partition.txt.md5cache", "thesis.txt"]


# --------------------------------------------------------------------------------------------------
# bombs and partition oddities


def replaced_copy(src: Path, dst: Path, victim: str, payload: bytes) -> None:
    """A copy of the zip in which one member holds `payload` instead (deflated, as a bomb would be)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, payload if info.filename.endswith(victim) else zin.read(info))


def claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its baseline frame header (SOF0) saying width x height: a decompression bomb."""
    at = jpeg.index(b"\xff\xc0") + 5  # marker, length (2), precision (1), then height and width
    return jpeg[:at] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[at + 4:]


@pytest.mark.parametrize("bomb", ["zip", "header"])
def test_a_bomb_in_the_archive_is_refused_before_it_is_decoded(tmp_path, cli, archive, bomb):
    """A member that inflates to megabytes of zeros, or a JPEG whose header claims 1000 x 1000 (today
    it decodes and lands in the array as a grey image, exit 0): one line naming the member."""
    with zipfile.ZipFile(archive[0]) as zf:
        good = zf.read("img_align_celeba/000005.jpg")
    payload = bytes(data.MAX_MEMBER_BYTES + 1) if bomb == "zip" else claiming(good, 1000, 1000)
    bad_zip = tmp_path / "img_align_celeba.zip"
    replaced_copy(archive[0], bad_zip, "000005.jpg", payload)
    assert bad_zip.stat().st_size < archive[0].stat().st_size + 10_000  # small on disk
    cfg = synthetic_config(tmp_path, archive, images=str(bad_zip))
    proc = cli("data", "prepare", "--config", cfg, "--workers", "1")
    why = "bytes uncompressed, more than the 1,048,576 accepted" if bomb == "zip" else \
        "its header says 1000x1000, CelebA's images are 178x218"
    assert_one_line_error(proc, "000005.jpg", why)
    assert leftovers(tmp_path / "out") == []


@pytest.mark.parametrize("oddity", ["duplicate", "bom"])
def test_partition_file_oddities_are_one_line_errors(tmp_path, cli, archive, oddity):
    """A line twice (2 images became 4), a UTF-8 BOM (the first image silently dropped)."""
    lines = archive[1].read_bytes().splitlines(keepends=True)
    part = tmp_path / "list_eval_partition.txt"
    part.write_bytes(b"".join(lines[:2] + lines[:2]) if oddity == "duplicate" else b"\xef\xbb\xbf" + b"".join(lines))
    cfg = synthetic_config(tmp_path, archive, partition=str(part))
    proc = cli("data", "prepare", "--config", cfg, "--workers", "1")
    assert_one_line_error(proc, str(part), "lists 000001.jpg twice (lines 1 and 3)" if oddity == "duplicate"
                          else "starts with a UTF-8 byte-order mark")
    assert leftovers(tmp_path / "out") == []
