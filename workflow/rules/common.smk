# Shared by every rule file: the validated config as ocbench sees it, and the paths it implies.

from pathlib import Path

from ocbench.config import from_dict

# How every rule calls the ocbench CLI: from this checkout, in whatever environment runs the job
# (the active one, or environment.yml's with --use-conda / --software-deployment-method conda).
# (Doubled braces: Snakemake formats shell commands, so {{...}} reaches the shell as {...}.)
OCBENCH = f"PYTHONPATH={workflow.basedir}${{{{PYTHONPATH:+:$PYTHONPATH}}}} python -m ocbench"
ENV = "../../environment.yml"

# ocbench's own checks on top of the schema (run.gans names a GAN that `gans` defines, ...).
CFG = from_dict(config)
RESULTS = str(CFG.results_dir)
FIGURES_DIR = str(CFG.figures_dir)
RUN_IDS = CFG.run_ids()

# Every job reads the merged config from one file, so `ocbench` sees exactly what Snakemake
# merged (paper.yaml, --configfile overlays, --config values). Rewritten only when it changes.
CONFIG_FILE = f"{RESULTS}/config.yaml"
Path(RESULTS).mkdir(parents=True, exist_ok=True)
if not Path(CONFIG_FILE).exists() or Path(CONFIG_FILE).read_text() != CFG.dump():
    Path(CONFIG_FILE).write_text(CFG.dump())

LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
