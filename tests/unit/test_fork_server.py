"""Worker processes are forked from a server the program forked early: the same program (what it set
before the server started is there, nothing is imported again), holding none of the program's other
descriptors."""

import json
import os
import subprocess
import sys

SCRIPT = """
import json, os, sys, tempfile
from divertgui.engine import fork_server

secret = tempfile.TemporaryFile()
sys.divertgui_marker = "set before the fork server started"


def report(queue, secret_inode):
    inodes = []
    for name in os.listdir("/proc/self/fd"):
        try:
            inodes.append(os.fstat(int(name)).st_ino)
        except OSError:
            pass
    queue.put({"marker": getattr(sys, "divertgui_marker", None), "holds_secret": secret_inode in inodes,
               "parent_is_server": os.getppid() != int(sys.argv[1])})


if __name__ == "__main__":
    fork_server.prepare()
    context = fork_server.context()
    queue = context.Queue()
    worker = context.Process(target=report, args=(queue, os.fstat(secret.fileno()).st_ino))
    worker.start()
    print(json.dumps(queue.get(timeout=20)))
    worker.join(20)
    print(json.dumps({"exitcode": worker.exitcode}))
"""


def test_a_worker_is_the_program_forked_without_its_other_descriptors(tmp_path):
    script = tmp_path / "fork_server_probe.py"
    script.write_text(SCRIPT)
    process = subprocess.run([sys.executable, str(script), str(os.getpid())], capture_output=True, text=True,
                             timeout=60)
    assert process.returncode == 0, process.stderr
    seen, ended = (json.loads(line) for line in process.stdout.splitlines())
    assert seen == {"marker": "set before the fork server started", "holds_secret": False,
                    "parent_is_server": True}
    assert ended == {"exitcode": 0}
