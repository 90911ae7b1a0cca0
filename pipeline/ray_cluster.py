"""Ray connections for sweeps: a local Ray that listens on loopback only, token files, cluster drivers.

A reachable Ray runs any code it is sent, so:

- **local** (`python -m pipeline.sweep SPEC`, no `--address`): Ray's single-machine mode
  (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, the default on macOS/Windows). Only then does Ray 2.60 keep
  the node address 127.0.0.1 (otherwise it swaps loopback for the routable address,
  ray/_private/services.py `resolve_ip_for_localhost`), and with a loopback node address every Ray
  server (GCS, raylet, object manager, runtime-env agent, workers) listens on 127.0.0.1 instead of
  all interfaces. Token authentication is on as well, with a fresh token in a private temp dir
  (RAY_AUTH_TOKEN_PATH): loopback is reachable by every user of the machine, and Ray's own default
  token file (~/.ray/auth_token) is created world-readable.
- **cluster** (`--address HOST:PORT | auto`): the driver sends the cluster's token, read from the file
  RAY_AUTH_TOKEN_PATH names (or ~/.ray/auth_token). A token file that is missing, empty, not the
  user's, or readable by anyone else is refused, naming the file and the fix.

`python -m pipeline.ray_cluster new-token PATH` writes a token file (mode 0600, never overwrites);
`python -m pipeline.ray_cluster check-token PATH` checks one. cluster/ray_slurm.sbatch uses both.
"""
from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import socket
import stat
import sys
import tempfile
from pathlib import Path

from pipeline.errors import UserError
from pipeline.utils.net import is_loopback

log = logging.getLogger("hypernas.ray")

SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's single-machine mode
AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
TOKEN_ENV = "RAY_AUTH_TOKEN"  # the token itself: readable in /proc/<pid>/environ, so not ours to set
DEFAULT_TOKEN_FILE = Path("~/.ray/auth_token")  # Ray's default location


class TokenFileError(UserError):
    """A Ray token file is missing, empty, not the user's, or readable by others."""


# --------------------------------------------------------------------------------------------------
# Token files


def check_token_file(path: str | os.PathLike) -> Path:
    """The token file, if it is a non-empty regular file of this user that nobody else can read."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise TokenFileError(f"Ray token file {p} does not exist; create one with "
                             f"`python -m pipeline.ray_cluster new-token {p}`, or point {TOKEN_PATH_ENV} "
                             f"at the cluster's token file") from None
    except OSError as e:
        raise TokenFileError(f"Ray token file {p} cannot be read ({e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise TokenFileError(f"Ray token file {p} is not a regular file")
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        raise TokenFileError(f"Ray token file {p} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()}); "
                             f"use a token file of your own (`python -m pipeline.ray_cluster new-token PATH`)")
    if st.st_mode & 0o077:
        raise TokenFileError(f"Ray token file {p} is accessible to other users (mode {stat.S_IMODE(st.st_mode):04o}): "
                             f"whoever can read it can run code on the cluster; run `chmod 600 {p}` "
                             f"(and start the cluster with a new token if others may have read it)")
    try:
        empty = not p.read_text().strip()
    except OSError as e:
        raise TokenFileError(f"Ray token file {p} cannot be read ({e})") from None
    if empty:
        raise TokenFileError(f"Ray token file {p} is empty; write a new one with "
                             f"`python -m pipeline.ray_cluster new-token PATH`")
    return p


def new_token_file(path: str | os.PathLike) -> Path:
    """Write a fresh 256-bit token to `path` (mode 0600, parent made 0700 if missing); never overwrites."""
    p = Path(path).expanduser()
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if p.exists():
        raise TokenFileError(f"Ray token file {p} already exists; remove it or choose another path")
    # Created 0600 from the start (os.open's mode, not a chmod after writing), under a temporary
    # name, then linked into place: the token is never readable by others, there is never a
    # half-written token file, and an existing file is never replaced (link fails on it).
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, p)
    except FileExistsError:
        raise TokenFileError(f"Ray token file {p} already exists; remove it or choose another path") from None
    finally:
        tmp.unlink(missing_ok=True)
    return p


def use_cluster_token() -> Path | None:
    """Make this process (and the Ray it connects to) send the cluster's token; the token file used.

    RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token when it exists; None when there is no token (a cluster
    without authentication) or RAY_AUTH_MODE=disabled says not to send one.
    """
    mode = os.environ.get(AUTH_MODE_ENV, "").lower()
    if mode == "disabled":
        return None
    named = os.environ.get(TOKEN_PATH_ENV)
    if named:
        path = check_token_file(named)
    elif os.environ.get(TOKEN_ENV):
        log.warning("the Ray token comes from the %s environment variable, which the same user and root can "
                    "read in /proc; prefer a token file (%s)", TOKEN_ENV, TOKEN_PATH_ENV)
        os.environ[AUTH_MODE_ENV] = "token"
        return None
    elif DEFAULT_TOKEN_FILE.expanduser().exists():
        path = check_token_file(DEFAULT_TOKEN_FILE)
    elif mode == "token":
        raise TokenFileError(f"{AUTH_MODE_ENV}=token but there is no token: point {TOKEN_PATH_ENV} at the "
                             f"cluster's token file (readable by you only), e.g. the one cluster/ray_slurm.sbatch "
                             f"prints")
    else:
        return None
    if os.environ.pop(TOKEN_ENV, None):  # Ray prefers the variable to the file: the file must win
        log.warning("%s ignored: the token is read from %s", TOKEN_ENV, path)
    os.environ[AUTH_MODE_ENV] = "token"
    os.environ[TOKEN_PATH_ENV] = str(path)
    return path


# --------------------------------------------------------------------------------------------------
# Connecting


def check_address(address: str, timeout: float = 3.0) -> None:
    """Fail fast on a host:port nothing listens on (ray.init would retry for a long time)."""
    if address == "auto" and ":" in os.environ.get("RAY_ADDRESS", "") and "://" not in os.environ["RAY_ADDRESS"]:
        address = os.environ["RAY_ADDRESS"]  # what ray.init("auto") will use (cluster/ray_slurm.sbatch sets it)
    if address in ("auto", "local") or address.startswith("ray://"):
        return  # ray.init finds (or fails to find) the cluster itself
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address!r} is not host:port, 'auto' or ray://host:port")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise UserError(f"no Ray cluster reachable at {address!r} ({e}); start one with "
                        f"`ray start --head --port {port}` or check the address") from None


def connect(address: str | None, num_cpus: int | None) -> None:
    """Connect this driver to the cluster at `address`, or start a loopback-only local Ray."""
    if address:
        _connect_cluster(address)
    else:
        _start_local(num_cpus)


def _connect_cluster(address: str) -> None:
    auth_env = (AUTH_MODE_ENV, TOKEN_PATH_ENV, TOKEN_ENV)
    before = [os.environ.get(k) for k in auth_env]
    token = use_cluster_token()  # first: a bad token file is refused before any connection is tried
    if "ray" in sys.modules and [os.environ.get(k) for k in auth_env] != before:
        # Ray reads RAY_AUTH_MODE / the token when it is imported: these changes would not reach it
        raise RuntimeError(f"`ray` was imported before pipeline.ray_cluster.connect could turn on token "
                           f"authentication: call connect first, or set {AUTH_MODE_ENV}=token and "
                           f"{TOKEN_PATH_ENV} before Python starts")
    check_address(address)
    import ray
    from ray.exceptions import AuthenticationError

    try:
        ray.init(address=address, log_to_driver=True)
    except AuthenticationError as e:
        raise UserError(f"Ray cluster at {address!r} refused this driver's credentials: {e.message}") from None
    except (ConnectionError, RuntimeError, ValueError) as e:
        hint = "" if token or os.environ.get(TOKEN_ENV) else (
            f"; if the cluster uses token authentication, point {TOKEN_PATH_ENV} at its token file")
        raise UserError(f"cannot connect to a Ray cluster at {address!r}: {e}{hint}") from None


def _start_local(num_cpus: int | None) -> None:
    if "ray" in sys.modules:
        # Ray reads both settings below from the environment when it is imported.
        raise RuntimeError("pipeline.ray_cluster.connect must start the local Ray before `ray` is imported "
                           "(its loopback-only mode and token authentication are import-time settings)")
    token_dir = Path(tempfile.mkdtemp(prefix="hypernas-ray-"))  # 0700
    atexit.register(shutil.rmtree, token_dir, True)  # registered before ray.init: runs after Ray's shutdown
    token = new_token_file(token_dir / "auth_token")
    os.environ.pop(TOKEN_ENV, None)
    os.environ.update({SINGLE_MACHINE_ENV: "0", AUTH_MODE_ENV: "token", TOKEN_PATH_ENV: str(token)})
    import ray

    # address="local": a RAY_ADDRESS in the environment must not turn this into a cluster connection
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
    node_ip = ray.util.get_node_ip_address()
    if not is_loopback(node_ip):  # a Ray that ignores the single-machine mode would listen on every interface
        ray.shutdown()
        raise RuntimeError(f"the local Ray came up on {node_ip}, not on loopback; refusing to run a sweep on it")
    log.info("local Ray on %s only, token authentication on (token %s)", node_ip, token)


# --------------------------------------------------------------------------------------------------
# CLI (cluster/ray_slurm.sbatch)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2 or argv[0] not in ("new-token", "check-token"):
        print("usage: python -m pipeline.ray_cluster new-token|check-token PATH", file=sys.stderr)
        return 2
    try:
        path = new_token_file(argv[1]) if argv[0] == "new-token" else check_token_file(argv[1])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
