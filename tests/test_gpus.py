"""GPU slots for concurrent jobs, with a pretend list of devices (no GPU needed): --devices, a
CUDA_VISIBLE_DEVICES as SLURM sets it, or a fake `nvidia-smi` first on PATH that prints what the
real one prints."""

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO

# `python -m ocbench` with this checkout first on the path, as the workflow's rules run it (the
# venv's `ocbench` script imports the package wherever it was installed from).
EXE = [sys.executable, "-m", "ocbench"]
# No nvidia-smi on PATH (the venv's bin has none) and no SLURM job or CUDA_VISIBLE_DEVICES of the
# shell running the tests; a test adds what it pretends.
ENV = {**{k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")},
       "PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent)}
REPORT = "import os, sys, time; print(os.environ['CUDA_VISIBLE_DEVICES'], time.time(), flush=True); " \
         "time.sleep(float(sys.argv[1])); print(time.time(), flush=True)"
SHOW = "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES'), os.environ.get('CUDA_DEVICE_ORDER'))"


def start(lock_dir, devices, seconds, runs_per_gpu=1):
    return subprocess.Popen(
        [*EXE, "with-gpu", "--devices", devices, "--runs-per-gpu", str(runs_per_gpu), "--lock-dir",
         str(lock_dir), "--", sys.executable, "-c", REPORT, str(seconds)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def finish(proc):
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    first, last = out.split("\n")[:2]
    device, began = first.split()
    return device, float(began), float(last), err


def test_concurrent_jobs_get_distinct_devices(tmp_path):
    jobs = [start(tmp_path, "0,1,2", 3) for _ in range(3)]
    results = [finish(j) for j in jobs]
    assert sorted(r[0] for r in results) == ["0", "1", "2"]
    # They ran at the same time: each began before any ended.
    assert max(r[1] for r in results) < min(r[2] for r in results)


def test_more_jobs_than_slots_wait(tmp_path):
    first = start(tmp_path, "0", 2)
    line = first.stdout.readline()  # its job runs: it holds GPU 0's only slot
    assert line, first.communicate(timeout=60)[1]
    device = line.split()[0]
    second = start(tmp_path, "0", 0)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    b = finish(second)
    assert device == b[0] == "0"
    assert b[1] >= float(out.split()[0])  # the second began only after the first had ended
    assert f"slots busy (held by PID {first.pid} (" in b[3] and "waiting for one" in b[3]


def test_several_runs_share_a_gpu_when_configured(tmp_path):
    jobs = [start(tmp_path, "0,1", 3, runs_per_gpu=2) for _ in range(4)]
    results = [finish(j) for j in jobs]
    assert sorted(r[0] for r in results) == ["0", "0", "1", "1"]  # spread before sharing
    assert max(r[1] for r in results) < min(r[2] for r in results)


def test_a_killed_jobs_slot_is_freed(tmp_path):
    victim = start(tmp_path, "0", 600)
    assert victim.stdout.readline().split()[0] == "0"  # it holds the only slot
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    t0 = time.time()
    device, began, _, err = finish(start(tmp_path, "0", 0))
    assert device == "0" and began - t0 < 5 and "waiting" not in err


def test_no_devices_runs_the_command_unchanged(tmp_path):
    proc = subprocess.run([*EXE, "with-gpu", "--devices", "", "--lock-dir", str(tmp_path), "--",
                           sys.executable, "-c", "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES'))"],
                          capture_output=True, text=True, env={k: v for k, v in ENV.items()
                                                               if k != "CUDA_VISIBLE_DEVICES"})
    assert proc.returncode == 0 and proc.stdout.strip() == "None"


def test_inside_a_slurm_job_slurm_has_chosen_the_gpu(tmp_path):
    env = {**ENV, "SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "0"}
    holder = start(tmp_path, "0", 600)  # another job holds this machine's slot for "GPU 0"
    try:
        assert holder.stdout.readline().split()[0] == "0"
        proc = subprocess.run([*EXE, "with-gpu", "--lock-dir", str(tmp_path), "--", sys.executable, "-c",
                               "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0 and proc.stdout.strip() == "0" and "waiting" not in proc.stderr
        assert "running on GPU 0 (chosen by SLURM)" in proc.stderr
    finally:
        holder.kill()
        holder.wait()


# --- GPU lists as nvidia-smi prints them, SLURM's CUDA_VISIBLE_DEVICES, MIG, several users ---------

def uuid(n: int) -> str:
    return f"GPU-{n:08x}-1c2d-3e4f-5a6b-7c8d9e0f1a2b"


def fake_nvidia_smi(bin_dir: Path, gpus: list[list[str]] | None) -> None:
    """An `nvidia-smi` in bin_dir printing what the real one prints for `-L` and for
    `--query-gpu=index,uuid,pci.bus_id --format=csv,noheader`: one H100 per entry of `gpus`, each
    with the MIG devices its list names. gpus=None: one whose driver is gone (the real one's words
    and exit status 9)."""
    bin_dir.mkdir(exist_ok=True)
    if gpus is None:
        body = ('echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver. '
                'Make sure that the latest NVIDIA driver is installed and running."\nexit 9\n')
    else:
        listing, csv = [], []
        for i, migs in enumerate(gpus):
            listing.append(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: {uuid(i)})")
            listing += [f"  MIG 3g.40gb     Device  {j}: (UUID: {mig})" for j, mig in enumerate(migs)]
            csv.append(f"{i}, {uuid(i)}, 00000000:{0x19 + 0x20 * i:02X}:00.0")

        def lines(rows):  # printf, a shell builtin: the tests' PATH holds no coreutils
            return "printf '%s\\n' " + " ".join(f"'{row}'" for row in rows)

        body = ('case "$*" in\n'
                f'  "-L") {lines(listing)} ;;\n'
                f'  "--query-gpu=index,uuid,pci.bus_id --format=csv,noheader") {lines(csv)} ;;\n'
                '  *) echo "fake nvidia-smi: unsupported arguments: $*" >&2; exit 2 ;;\nesac\n')
    exe = bin_dir / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(0o755)


def env_with(bin_dir: Path | None = None, **extra) -> dict:
    return {**ENV, **extra, **({"PATH": f"{bin_dir}:{ENV['PATH']}"} if bin_dir else {})}


def start_in(env: dict, lock_dir: Path, seconds: float, *options: str) -> subprocess.Popen:
    """`ocbench with-gpu` with the GPU list of `env`; the command prints its CUDA_VISIBLE_DEVICES,
    CUDA_DEVICE_ORDER and start time, sleeps, then prints its end time."""
    report = "import os, sys, time; print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['CUDA_DEVICE_ORDER'], " \
             "time.time(), flush=True); time.sleep(float(sys.argv[1])); print(time.time(), flush=True)"
    return subprocess.Popen([*EXE, "with-gpu", "--lock-dir", str(lock_dir), *options, "--", sys.executable,
                             "-c", report, str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def ended(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    first, last = out.split("\n")[:2]
    device, order, began = first.split()
    return {"device": device, "order": order, "began": float(began), "ended": float(last), "err": err}


def test_without_a_list_every_gpu_nvidia_smi_lists_is_claimed_in_its_order(tmp_path):
    fake_nvidia_smi(tmp_path / "bin", [[], []])
    env, slots = env_with(tmp_path / "bin"), tmp_path / "shared" / "slots"
    jobs = [ended(j) for j in [start_in(env, slots, 3) for _ in range(2)]]
    assert sorted(j["device"] for j in jobs) == ["0", "1"]
    assert max(j["began"] for j in jobs) < min(j["ended"] for j in jobs)  # side by side
    # GPU N is nvidia-smi's GPU N for CUDA too (its default order, fastest first, may differ)
    assert {j["order"] for j in jobs} == {"PCI_BUS_ID"}
    # The slot files name the physical GPUs, and every user of the machine may take them.
    assert sorted(p.name for p in slots.iterdir()) == [f"{uuid(0)}-slot0.lock", f"{uuid(1)}-slot0.lock"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o666 for p in slots.iterdir())
    # Only the slot folder is 1777; the parent it had to create gets the umask (a 1777 folder in a
    # home would be open to anyone's symlinks).
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(slots.stat().st_mode) == 0o1777
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o777 & ~umask


def test_jobs_in_a_multi_gpu_slurm_allocation_spread_over_its_gpus(tmp_path):
    """snakemake inside `salloc --gres=gpu:2`, twice on one node with device confinement: each
    allocation sees its two GPUs as 0 and 1 (and nvidia-smi lists all four); each allocation's jobs
    take distinct GPUs, and no allocation waits for the other's."""
    fake_nvidia_smi(tmp_path / "bin", [[], [], [], []])
    jobs = {alloc: [start_in(env_with(tmp_path / "bin", SLURM_JOB_ID=alloc, CUDA_VISIBLE_DEVICES="0,1"),
                             tmp_path / "slots", 3) for _ in range(2)] for alloc in ("41", "42")}
    runs = {alloc: [ended(j) for j in procs] for alloc, procs in jobs.items()}
    for alloc, done in runs.items():
        assert sorted(j["device"] for j in done) == ["0", "1"], alloc
    every = runs["41"] + runs["42"]
    assert max(j["began"] for j in every) < min(j["ended"] for j in every)
    assert not any("waiting" in j["err"] for j in every)


def test_one_gpu_named_by_index_or_by_uuid_has_one_slot(tmp_path):
    fake_nvidia_smi(tmp_path / "bin", [[], []])
    first = start_in(env_with(tmp_path / "bin"), tmp_path / "slots", 2, "--devices", "1")
    assert first.stdout.readline().split()[0] == "1"  # it holds GPU 1's only slot
    second = start_in(env_with(tmp_path / "bin", CUDA_VISIBLE_DEVICES=uuid(1)), tmp_path / "slots", 0)
    first_ended = float(first.communicate(timeout=60)[0].split()[0])
    b = ended(second)
    assert b["device"] == uuid(1) and "waiting" in b["err"] and b["began"] >= first_ended


def test_mig_devices_are_gpus_of_their_own(tmp_path):
    """A MIG-enabled GPU is claimed as its MIG devices, by UUID, also as drivers before R470 wrote
    them (MIG-GPU-<uuid>/<gi>/<ci>), with lock files that stay in the slot folder."""
    old_style = f"MIG-{uuid(0)}/1/0"
    new_style = "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f"
    fake_nvidia_smi(tmp_path / "bin", [[new_style, old_style], []])
    env, slots = env_with(tmp_path / "bin"), tmp_path / "slots"
    jobs = [ended(j) for j in [start_in(env, slots, 3) for _ in range(3)]]
    assert sorted(j["device"] for j in jobs) == sorted([new_style, old_style, "1"])
    assert sorted(p.name for p in slots.iterdir()) == sorted(
        [f"{new_style}-slot0.lock", f"MIG-{uuid(0)}_1_0-slot0.lock", f"{uuid(1)}-slot0.lock"])
    # ... and MIG UUIDs as CUDA_VISIBLE_DEVICES (SLURM's or a user's) are claimed among as they are
    shown = ended(start_in(env_with(CUDA_VISIBLE_DEVICES=new_style), tmp_path / "other", 0))
    assert shown["device"] == new_style


def test_a_failing_nvidia_smi_stops_the_job_in_one_line(tmp_path):
    fake_nvidia_smi(tmp_path / "bin", None)
    proc = subprocess.run([*EXE, "with-gpu", "--lock-dir", str(tmp_path / "slots"), "--", sys.executable, "-c", SHOW],
                          capture_output=True, text=True, env=env_with(tmp_path / "bin"), timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""  # the command did not run, on GPU 0 or the CPU
    assert proc.stderr.count("\n") == 1 and "nvidia-smi -L failed (exit 9): NVIDIA-SMI has failed" in proc.stderr
    assert "gpus.devices" in proc.stderr


def test_a_missing_nvidia_smi_is_named_and_the_command_runs_as_is(tmp_path):
    from ocbench.gpus import NVIDIA_DRIVER_SIGNS, no_gpu_list_line

    proc = subprocess.run([*EXE, "with-gpu", "--lock-dir", str(tmp_path / "slots"), "--", sys.executable, "-c", SHOW],
                          capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 0 and proc.stdout.split() == ["None", "PCI_BUS_ID"]
    assert proc.stderr.count("\n") == 1 and proc.stderr.strip() == no_gpu_list_line("auto")
    if not any(sign.exists() for sign in NVIDIA_DRIVER_SIGNS):  # a machine without a GPU, like these
        assert "as expected on a machine without a GPU" in proc.stderr


def test_without_a_list_of_gpus_the_line_says_whether_that_is_expected(tmp_path):
    """No nvidia-smi and no CUDA_VISIBLE_DEVICES: expected on a machine without an NVIDIA driver or for
    a CPU config (no advice that reads like an error); where a driver is loaded, what to do."""
    from ocbench.gpus import no_gpu_list_line

    absent, present = [tmp_path / "proc-driver-nvidia"], [tmp_path / "nvidiactl"]
    present[0].touch()
    no_driver = no_gpu_list_line("auto", absent)
    assert "as expected on a machine without a GPU" in no_driver and "nvidia-smi on PATH" not in no_driver
    assert "as configured (train.device: cpu)" in no_gpu_list_line("cpu", present)
    assert "set train.device: auto or cpu" in no_gpu_list_line("cuda:1", absent)
    on_gpu_machine = no_gpu_list_line("auto", present)
    assert f"an NVIDIA driver is loaded ({present[0]}) but nvidia-smi is not on PATH" in on_gpu_machine
    assert "put nvidia-smi on PATH, or name the GPUs in gpus.devices" in on_gpu_machine


def test_zero_runs_per_gpu_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    from ocbench.cli import main

    def exec_instead(*args):  # this test's process must not be replaced if the check is missing
        raise AssertionError(f"with-gpu ran the command {args}")

    monkeypatch.setattr(os, "execvp", exec_instead)
    assert main(["with-gpu", "--runs-per-gpu", "0", "--devices", "", "--lock-dir", str(tmp_path), "--", "true"]) == 2
    err = capsys.readouterr().err
    assert err == "ocbench: error: --runs-per-gpu 0: the slots per GPU must be at least 1, e.g. --runs-per-gpu 2\n"


def test_any_gpu_answers_from_cuda_visible_devices_and_nvidia_smi_without_torch(tmp_path, monkeypatch):
    """What the workflow plans its network jobs' threads by (workflow/rules/common.smk)."""
    from ocbench.errors import OcbenchError
    from ocbench.gpus import any_gpu

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", ENV["PATH"])  # no nvidia-smi
    assert not any_gpu()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # named, nothing to check it against: believed
    assert any_gpu()
    fake_nvidia_smi(tmp_path / "one", [[]])
    monkeypatch.setenv("PATH", f"{tmp_path / 'one'}:{ENV['PATH']}")
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert not any_gpu()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert any_gpu()
    fake_nvidia_smi(tmp_path / "none", [])
    monkeypatch.setenv("PATH", f"{tmp_path / 'none'}:{ENV['PATH']}")
    assert not any_gpu()
    fake_nvidia_smi(tmp_path / "failing", None)
    monkeypatch.setenv("PATH", f"{tmp_path / 'failing'}:{ENV['PATH']}")
    with pytest.raises(OcbenchError, match="nvidia-smi -L failed"):
        any_gpu()
    assert "torch" not in subprocess.run([sys.executable, "-c", "import sys, ocbench.gpus; print(*sys.modules)"],
                                         env=ENV, capture_output=True, text=True, check=True).stdout.split()


def as_user(uid: int) -> dict:
    return {"user": uid, "group": uid, "extra_groups": [], "umask": 0o022}


@pytest.fixture(scope="module")
def other_users_python():
    """An interpreter other users may run (the venv's may live under a 0700 home): the slot code
    needs nothing beyond the standard library. Skipped unless root, which may start their processes."""
    if os.geteuid() != 0:
        pytest.skip("other users' processes need root to start")
    for python in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        try:
            if subprocess.run([python, "-c", "import sys; assert sys.version_info >= (3, 10)"],
                              capture_output=True, **as_user(65534)).returncode == 0:
                return python
        except OSError:  # not there, or not theirs to run
            continue
    pytest.skip("no Python >= 3.10 that other users may run")


@pytest.fixture(scope="module")
def readable_package(other_users_python):
    """A copy of the ocbench package that other users may read, in a folder of its own: the checkout
    may sit where they cannot enter (a 0700 home, `mktemp -d`). Its folder is removed after."""
    root = Path(tempfile.mkdtemp(prefix="ocbench-package-"))
    try:
        shutil.copytree(REPO / "ocbench", root / "ocbench", ignore=shutil.ignore_patterns("__pycache__"))
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        probe = subprocess.run([other_users_python, "-c", f"import sys; sys.path.insert(0, {str(root)!r}); "
                                "import ocbench.gpus"], capture_output=True, text=True, **as_user(65534))
        if probe.returncode != 0:
            pytest.skip(f"other users cannot import a copy of ocbench in {root} (is its parent, "
                        f"{root.parent}, closed to them?): {probe.stderr.strip().splitlines()[-1:]}")
        yield root
    finally:
        shutil.rmtree(root)


def with_gpu_as(uid: int, python: str, slots: Path, package: Path) -> subprocess.CompletedProcess:
    """ocbench with-gpu --devices 0 as user `uid`, through the function the CLI calls (whose
    config loading needs the venv's packages), with the CLI's one-line error; ocbench imported from
    `package` (readable_package)."""
    code = (f"import sys; sys.path.insert(0, {str(package)!r}); from pathlib import Path\n"
            "from ocbench.errors import OcbenchError; from ocbench.gpus import exec_with_gpu\n"
            f"try: exec_with_gpu([sys.executable, '-c', {SHOW!r}], ['0'], 1, Path({str(slots)!r}))\n"
            "except OcbenchError as e: sys.exit(f'ocbench: error: {e}')")
    return subprocess.run([python, "-c", code], capture_output=True, text=True, env=ENV, timeout=60,
                          **as_user(uid))


@pytest.fixture
def shared_tmp():
    """A folder like /tmp, where other users may add theirs (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="ocbench-test-"))
    path.chmod(0o1777)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=True)


def test_another_user_takes_the_same_slot(shared_tmp, other_users_python, readable_package):
    """User A's job creates the slot folder and file under umask 022; user B's job after it takes
    the same slot (the folder is 1777 like /tmp, the file 0o666)."""
    slots = shared_tmp / "slots"
    for uid in (65534, 1):  # nobody, then daemon
        proc = with_gpu_as(uid, other_users_python, slots, readable_package)
        assert proc.returncode == 0 and proc.stdout.split()[0] == "0", proc.stderr
    slot = slots / "gpu0-slot0.lock"
    assert slot.stat().st_uid == 65534 and stat.S_IMODE(slot.stat().st_mode) == 0o666
    assert slots.stat().st_uid == 65534 and stat.S_IMODE(slots.stat().st_mode) == 0o1777


def test_a_slot_file_this_user_cannot_open_is_named_in_one_line(shared_tmp, other_users_python, readable_package):
    slots = shared_tmp / "slots"
    slots.mkdir()
    slots.chmod(0o1777)
    (slots / "gpu0-slot0.lock").write_text("")
    (slots / "gpu0-slot0.lock").chmod(0o600)  # root's, as an old ocbench under umask 077 left it
    proc = with_gpu_as(65534, other_users_python, slots, readable_package)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert f"cannot open GPU slot file {slots / 'gpu0-slot0.lock'}" in proc.stderr and "chmod 666" in proc.stderr


# --- a slot folder others write to: symlinks, hard links, FIFOs, directories, a folder not ours ----

def shared_slots(tmp_path: Path) -> Path:
    slots = tmp_path / "slots"
    slots.mkdir()
    slots.chmod(0o1777)
    return slots


def three_gpus():
    from ocbench.gpus import Gpu

    return [Gpu(str(i), f"gpu{i}") for i in range(3)]


def test_a_planted_symlink_or_hard_link_never_redirects_the_pid_write(tmp_path, capsys):
    """Another user pre-creates the folder with slot files that point at the victim's files: each is
    skipped (named in one line), and the victim's files are as they were, the dangling link's target
    not created."""
    from ocbench.gpus import claim

    slots = shared_slots(tmp_path)
    thesis, linked = tmp_path / "thesis.txt", tmp_path / "notes.txt"
    thesis.write_text("my thesis")
    linked.write_text("my notes")
    (slots / "gpu0-slot0.lock").symlink_to(thesis)
    os.link(linked, slots / "gpu1-slot0.lock")
    (slots / "gpu2-slot0.lock").symlink_to(tmp_path / "created-by-us")  # dangling
    with pytest.raises(Exception) as err:
        claim(three_gpus(), 1, slots)
    assert thesis.read_text() == "my thesis" and linked.read_text() == "my notes"
    assert not (tmp_path / "created-by-us").exists()
    assert "none of the 3 GPU slots" in str(err.value) and "is a symlink" in str(err.value)
    said = capsys.readouterr().err
    assert "gpu0-slot0.lock is a symlink" in said and "gpu1-slot0.lock has 2 names" in said


def test_a_file_of_other_content_under_a_slots_name_is_not_overwritten(tmp_path):
    slots = shared_slots(tmp_path)
    (slots / "gpu0-slot0.lock").write_text("not a lock file: someone's data\n")
    proc = subprocess.run([*EXE, "with-gpu", "--devices", "0", "--lock-dir", str(slots), "--", sys.executable,
                           "-c", SHOW], capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 1 and proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert "gpu0-slot0.lock holds something other than a PID" in proc.stderr
    assert (slots / "gpu0-slot0.lock").read_text() == "not a lock file: someone's data\n"


def test_an_unusable_slot_file_is_skipped_for_the_next_slot(tmp_path, capsys):
    """A directory and a FIFO under two slots' names: named once each, and the third slot is taken
    (today's code stopped at the first, with a traceback)."""
    from ocbench.gpus import claim

    slots = shared_slots(tmp_path)
    (slots / "gpu0-slot0.lock").mkdir()
    os.mkfifo(slots / "gpu1-slot0.lock")
    gpu, fd = claim(three_gpus(), 1, slots)
    os.close(fd)
    assert gpu.name == "2"
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 2 and "gpu0-slot0.lock is a directory" in said[0] and "gpu1-slot0.lock is not a regular file" in said[1]


def test_a_waiting_job_says_who_holds_the_slots_and_gives_up_at_its_timeout(tmp_path):
    holder = start(tmp_path, "0", 600)
    try:
        assert holder.stdout.readline().split()[0] == "0"
        t0 = time.monotonic()
        proc = subprocess.run([*EXE, "with-gpu", "--devices", "0", "--lock-dir", str(tmp_path), "--timeout", "1",
                               "--", sys.executable, "-c", SHOW], capture_output=True, text=True, env=ENV, timeout=60)
        assert proc.returncode == 1 and proc.stdout == "" and time.monotonic() - t0 < 30
        waiting, error = proc.stderr.splitlines()
        assert f"held by PID {holder.pid} (" in waiting and "at most 1 s" in waiting
        assert f"no free GPU slot in {tmp_path} after 1 s (held by PID {holder.pid} (" in error
    finally:
        holder.kill()
        holder.wait()


def test_a_slot_folder_that_is_a_symlink_or_open_to_everyone_is_refused(tmp_path):
    from ocbench.errors import OcbenchError
    from ocbench.gpus import claim

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "link").symlink_to(elsewhere)
    with pytest.raises(OcbenchError, match="is not a folder"):
        claim(three_gpus(), 1, tmp_path / "link")
    assert list(elsewhere.iterdir()) == []
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)  # anyone may rename another's slot file away: no sticky bit
    with pytest.raises(OcbenchError, match="writable by others .* without the sticky bit"):
        claim(three_gpus(), 1, tmp_path / "open")
    assert list((tmp_path / "open").iterdir()) == []


def test_a_slurm_job_folder_made_by_another_user_is_refused(tmp_path):
    """SLURM job ids are sequential: another user may create slurm-job-<next id> first."""
    if os.geteuid() != 0:
        pytest.skip("making a folder another user owns needs root")
    slots = shared_slots(tmp_path)
    planted = slots / "slurm-job-43"
    planted.mkdir()
    os.chown(planted, 65534, 65534)
    (planted / "gpu0-slot0.lock").symlink_to(tmp_path / "victim")
    env = {**ENV, "SLURM_JOB_ID": "43", "CUDA_VISIBLE_DEVICES": "0,1"}
    proc = subprocess.run([*EXE, "with-gpu", "--lock-dir", str(slots), "--", sys.executable, "-c", SHOW],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1 and proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert f"GPU slot folder {planted} belongs to uid 65534, not to you" in proc.stderr
    assert not (tmp_path / "victim").exists()


def test_gpus_named_by_uuid_need_no_nvidia_smi(tmp_path):
    """Every device a GPU-/MIG- UUID: nothing to look up, so a failing nvidia-smi does not block the job."""
    fake_nvidia_smi(tmp_path / "bin", None)
    names = f"{uuid(0)},MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f"
    shown = ended(start_in(env_with(tmp_path / "bin", CUDA_VISIBLE_DEVICES=names), tmp_path / "slots", 0))
    assert shown["device"] == uuid(0)
