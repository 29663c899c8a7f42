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
# # Submit a training job from a notebook
#
# Install the client with `pip install ./client` (from a checkout of the portal). Open this file in
# Jupyter through Jupytext, or run it as a plain script: `python examples/notebook_client.py`.
#
# It needs two environment variables:
#
# - `PORTAL_URL`: the portal's address (default `http://127.0.0.1:8501`, what `make run` serves);
# - `PORTAL_TOKEN`: an API token, created on the portal's **API tokens** page (it is shown only once).

# %%
import os

from ml_job_portal import JobClient

PORTAL_URL = os.environ.get("PORTAL_URL", "http://127.0.0.1:8501")
# Create the token on the portal's "API tokens" page; keep it out of the notebook itself.
PORTAL_TOKEN = os.environ.get("PORTAL_TOKEN")

client = JobClient(cluster_url=PORTAL_URL, token=PORTAL_TOKEN)

# %% [markdown]
# Submit the example script every workspace has. Three short epochs (`--seconds-per-epoch 0.2`) make
# the run take about a second.

# %%
job = client.submit_job(
    name="gpt-finetune-v3",
    script="train_example.py",
    learning_rate=0.001,
    epochs=3,
    batch_size=32,
    extra_args="--seconds-per-epoch 0.2",
)

# %% [markdown]
# Your own script: upload it from this machine, then submit it by its name (uploaded again after an edit, the
# same name runs the new version; each job keeps the copy it ran, `job.script()`):
#
# ```python
# client.upload("train.py")
# job = client.submit_job(name="my-run", script="train.py", epochs=100)
# ```

# %% [markdown]
# Follow the log live; the loop ends by itself when the job has finished.

# %%
for line in job.stream_logs():
    print(line)

# %%
job.wait()
results = job.get_results()
print(f"Final loss: {results.final_loss}")
print(results.files)

# %%
print(client.list_jobs()[:5])

# %% [markdown]
# The experiment history, as on the History page: every job you may see, filtered and sorted, here by
# the final accuracy the runs reported (`client.final_metric_names()` lists what can be sorted by).
# `client.export_history(...)` downloads a whole view as one Parquet file for pandas.

# %%
for past in client.history(status="Completed", sort="final_metric", metric="accuracy", page_size=5):
    print(f"{past.name}: accuracy {past.final_metrics['accuracy']:.3f}")
