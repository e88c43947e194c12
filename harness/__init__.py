"""What runs an experiment: from a composed config to a trained, tested and recorded run.

    build.py      config -> checked config, data, network, learning rate, Trainer
    module.py     the LightningModule; the schedule and parameter groups as pure functions
    callbacks.py  per-epoch line and throughput, checkpoints, Ctrl-C/SIGTERM
    record.py     a run's identity, summary.json, the run-directory lock
    loggers.py    the CSV log that survives a resume; the W&B logger
    wandb_mode.py online when possible, offline otherwise, never hanging
    secrets.py    keys and tokens never reach a file or the console
    launch.py     every argv / environment / DDP / launcher manipulation, saved and restored
"""
