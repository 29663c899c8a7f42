# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A hyperparameter sweep from a notebook
#
# One call tries a range of learning rates and two batch sizes on the example script, stops the clearly bad
# trials early, and names the best; one more runs the best as a single job. Every trial is an ordinary job with its
# own page. See docs/sweeps.md.
#
# Like examples/notebook_client.py it needs `PORTAL_URL` (default `http://127.0.0.1:8501`) and `PORTAL_TOKEN` (an
# API token from the portal's **API tokens** page). Runs as a plain script too: `python examples/notebook_sweep.py`.

# %%
import os

from ml_job_portal import JobClient, loguniform

PORTAL_URL = os.environ.get("PORTAL_URL", "http://127.0.0.1:8501")
client = JobClient(cluster_url=PORTAL_URL, token=os.environ.get("PORTAL_TOKEN"))

# %% [markdown]
# Bayesian search (Optuna's TPE) over a log-uniform learning rate and two batch sizes: 8 trials in all, 3 at a
# time, median early stopping. `epochs` and `extra_args` are the job's own fields, the same for every trial.

# %%
sweep = client.submit_sweep(
    "lr-search",
    "train_example.py",
    {"learning_rate": loguniform(1e-3, 1.0), "batch_size": [32, 64]},
    method="tpe",
    budget=8,
    parallel=3,
    early_stopping="median",
    epochs=4,
    extra_args="--seconds-per-epoch 0.1",
)
print(f"At most {sweep.estimate['gpu_hours']} GPU-hours, {sweep.estimate['cost']} in money")

# %%
sweep.wait(timeout=600, poll=1)
print(sweep.stop_reason)
for trial in sweep.trials():
    print(f"trial {trial['number']}: {trial['state']:<8} {trial['params']} -> {trial['value']}")

# %%
best = sweep.best()
print(f"Best: trial {best['number']} with loss {best['value']:.4f} at {best['params']}")

# %% [markdown]
# The winner as a single job, here with more epochs:

# %%
job = sweep.submit_best(epochs=6).wait(timeout=300)
print(f"{job.name}: {job.status}, final loss {job.get_results().final_loss:.4f}")
