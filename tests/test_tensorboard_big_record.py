"""An event file with one record larger than a pass reads (a 9 MB image summary between two losses, a real job
writing with TensorBoard's own writer): the record is read whole, and the loss after it reaches the chart."""

from __future__ import annotations

from tests.conftest import run_to_end
from tests.tb_writer import site_packages
from tests.test_tensorboard_scalars import scanner_of, stored

BIG = '''
import os, sys, time
sys.path.append({site!r})
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

w = EventFileWriter(os.path.join(os.environ["PORTAL_OUTPUT_DIR"], "runs"))
def loss(step, value):
    s = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="loss", simple_value=value)])
    w.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=s))
loss(0, 2.0)
image = summary_pb2.Summary.Image(height=1, width=1, colorspace=3, encoded_image_string=os.urandom(9 << 20))
w.add_event(event_pb2.Event(wall_time=time.time(), step=5, summary=summary_pb2.Summary(
    value=[summary_pb2.Summary.Value(tag="samples", image=image)])))
loss(10, 1.0)
w.close()
'''


def test_a_record_larger_than_a_pass_is_read_and_the_scalars_after_it_arrive(portal, user, workspace_script) -> None:
    job_id = portal.jobs.submit(user, {"name": "big-record", "script": workspace_script(
        "big.py", BIG.format(site=site_packages())), "epochs": 1})
    assert run_to_end(portal, user, job_id).status.value == "Succeeded", portal.jobs.log_tail(job_id)
    scanner = scanner_of(portal)
    for _ in range(3):  # passes, as the scanner makes them
        scanner.scan(job_id)
    assert stored(portal, job_id).get("loss") == [(0, 2.0), (10, 1.0)]
