"""What runs an experiment: from a composed config to a trained, tested and recorded run.

    job.py        whether this process trains a run: validation, then the run directory's state
    schema/       the config's types and ranges, derived from the code each choice names
    build.py      config -> data, network, learning rate, Trainer
    module.py     the LightningModule (it owns the epoch history); schedule and parameter groups
    callbacks.py  the epoch line, checkpoints, RNG state, Ctrl-C/SIGTERM
    diagnostics.py  per-norm-layer measurements during training
    evaluation.py PreciseBN and batch-statistics accuracies after training
    eval_run.py   a finished run's checkpoint evaluated again (eval.py)
    resume.py     the checkpoint a run resumes from (only its own), atomic saves
    loggers.py    the CSV log that survives a resume
    wandb_run.py  the run's W&B run: started, updated and finished in one place
    outcome.py    how a run ended (completed, diverged, interrupted, failed), recorded last
    launch.py     every argv / environment / DDP / launcher manipulation, saved and restored
    sweep.py      the end of a multirun: the list of its failed runs
The record itself (identity, summary.json, run directories) is record/'s.
"""
