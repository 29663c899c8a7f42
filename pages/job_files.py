"""The job page's Files tab: what the job wrote to its output folder, each a download link."""

from __future__ import annotations

import streamlit as st

from pages.common import download_url, portal
from pages.job_checkpoints import checkpoints_section
from services.models import JobView


def files_tab(job: JobView) -> None:
    files = portal().jobs.output_files(job.id)
    if not files and portal().jobs.backend.name == "kubernetes" and not portal().settings.job_data_volume_claim:
        st.info("Files a job writes stay in its pod: the portal shows them once your admin configures a "
                "shared workspace volume. Print metrics to the log, or save results to your own storage.")
        return
    if not files:
        st.info("The job has not written any files yet. Scripts write results to `$PORTAL_OUTPUT_DIR`.")
        return
    checkpoints_section(job)  # by folder convention, each with Retry from checkpoint
    zip_url = download_url(job, "zip")
    if zip_url:
        st.link_button("Download all as .zip", zip_url, icon=":material/download:")
    else:
        st.caption("Only the owner, viewers and admins may download this job's files.")
    for f in files:
        # The job chose its files' names: in a code span nothing is Markdown, so long as no backtick
        # closes it and no blank line ends the paragraph.
        name = f.path.replace("`", "'").replace("\r", " ").replace("\n", " ")
        url = download_url(job, "file", path=f.path)
        st.markdown(f"[`{name}`]({url}) · {f.size:,} bytes" if url else f"`{name}` · {f.size:,} bytes")
