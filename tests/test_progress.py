"""Progress output: tqdm's redrawn bar on a terminal, plain lines when stderr is a log file."""

import io

from ocbench.progress import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_lines_and_a_terminal_gets_the_bar():
    log = io.StringIO()
    bar = progress(range(10), total=10, desc="run epoch 1/3", unit="it", leave=False, stream=log, log_interval=0)
    for _ in bar:
        bar.set_postfix(g="0.5", refresh=False)
    bar.close()
    lines = log.getvalue().split("\n")
    assert "\r" not in log.getvalue() and lines[-1] == ""  # whole lines only, the last one ended
    assert lines[0] == "run epoch 1/3: 0/10 (0%) [00:00<?, ?it/s]"
    assert lines[-2].startswith("run epoch 1/3: 10/10 (100%) [") and lines[-2].endswith(", g=0.5]")

    terminal = Terminal()
    bar = progress(range(10), total=10, desc="run", stream=terminal, mininterval=0)
    for _ in bar:
        pass
    bar.close()
    assert terminal.getvalue().startswith("\r") and "10/10" in terminal.getvalue()
