"""Hosts reached through ssh for the tests: a real sshd started in a network
namespace with keys the test makes, and a window process whose ssh reads a
configuration of the test's own (in a mount namespace of its own: nothing
outside changes)."""

from __future__ import annotations

import os
import pathlib
import pwd
import socket
import subprocess
import sys

from tests.integration.conftest import REPO, wait_until

SSHD = "/usr/sbin/sshd"
PORT = 2222
# Where `divert serve` is found on the far side, as an installation puts it on the PATH.
SERVICE_PATH = os.path.dirname(sys.executable) + ":/usr/bin:/bin"


def make_key(path: pathlib.Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


class Sshd:
    """sshd in `ns` on `address`:PORT, letting in root with `client_key` (made in `directory` when None),
    started through the command `prefix` (such as an `unshare` into namespaces of its own)."""

    def __init__(self, ns, address: str, directory: pathlib.Path, client_key: pathlib.Path | None = None,
                 prefix: tuple[str, ...] = ()):
        self.address = address
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = client_key or directory / "id"
        if client_key is None:
            make_key(self.key)
        make_key(directory / "host_key")
        (directory / "authorized_keys").write_text(pathlib.Path(f"{self.key}.pub").read_text())
        host_key = (directory / "host_key.pub").read_text().split()
        self.known_host = f"[{address}]:{PORT} {host_key[0]} {host_key[1]}\n"
        (directory / "known_hosts").write_text(self.known_host)
        config = directory / "sshd_config"
        config.write_text("\n".join([
            f"Port {PORT}", f"ListenAddress {address}", f"HostKey {directory / 'host_key'}",
            f"AuthorizedKeysFile {directory / 'authorized_keys'}", "PermitRootLogin prohibit-password",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            f"PidFile {directory / 'sshd.pid'}", f"SetEnv PATH={SERVICE_PATH}", ""]))
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)   # sshd's privilege separation directory
        self.process = ns.popen([*prefix, SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
        with ns.entered():
            up = wait_until(lambda: _listening(address, PORT) or self.process.poll() is not None, 20)
        assert up and self.process.poll() is None, self.process.stderr.read()
        self.options = ["-F", "/dev/null", "-i", str(self.key), "-o", "IdentitiesOnly=yes",
                        "-o", f"UserKnownHostsFile={directory / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes"]

    def target(self) -> str:
        return f"ssh://root@{self.address}:{PORT}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _listening(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def with_ssh_config(servers: list[Sshd], staging: pathlib.Path) -> list[str]:
    """A command prefix: run in a mount namespace whose home directory (a tmpfs, with the
    entries this checkout and interpreter need bound back) holds an ssh configuration that
    reaches `servers` with their key and host keys, as a user's ~/.ssh would."""
    home = pathlib.Path(pwd.getpwuid(os.getuid()).pw_dir)
    ssh_dir = staging / "ssh"
    ssh_dir.mkdir(parents=True)
    (ssh_dir / "known_hosts").write_text("".join(server.known_host for server in servers))
    (ssh_dir / "config").write_text("\n".join([
        "Host *", f"  IdentityFile {servers[0].key}", "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {ssh_dir / 'known_hosts'}", "  StrictHostKeyChecking yes", ""]))
    entries = sorted({pathlib.Path(path).resolve().relative_to(home).parts[0]
                      for path in (REPO, sys.prefix, sys.base_prefix)
                      if pathlib.Path(path).resolve().is_relative_to(home)})
    steps, rebinds = ["mount --make-rprivate /"], [f"mount -t tmpfs -o mode=700 home {home}"]
    for number, entry in enumerate(entries):
        kept = staging / f"kept{number}"
        steps += [f"mkdir {kept}", f"mount --bind {home / entry} {kept}"]
        rebinds += [f"mkdir {home / entry}", f"mount --bind {kept} {home / entry}"]
    rebinds += [f"mkdir -m 700 {home / '.ssh'}", f"cp {ssh_dir / 'config'} {home / '.ssh' / 'config'}"]
    return ["unshare", "--mount", "sh", "-c", " && ".join(steps + rebinds) + ' && exec "$@"', "sh"]
