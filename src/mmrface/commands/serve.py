"""`mmrface serve`: the web UI (Gradio) and the HTTP API (/v1/restore, /v1/faces, /v1/health) in
one ASGI server, bound to 127.0.0.1 unless --host says otherwise.

    mmrface serve                                    # then open http://127.0.0.1:7860 (--weights auto)
    curl -F image=@photo.jpg -F fidelity=0.7 http://127.0.0.1:7860/v1/restore -o restored.png
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys

from mmrface.errors import UserError
from mmrface.hub.choose import add_weights_arguments
from mmrface.pipeline.detection import SERVER_FALLBACK_MAX_SIDE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    add_weights_arguments(p)  # -w is the default fidelity of requests
    p.add_argument("--noise", default="stored", choices=["stored", "random", "zero"],
                   help="StyleGAN2 noise: stored maps (repeatable, default), random per face (like GFPGAN), or zero")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("-s", "--upscale", type=float, default=2, help="default upscale of requests (1-4, default 2)")
    p.add_argument("--detector", default="auto", help="face detector for detector=auto (default: auto)")
    p.add_argument("--fallback-max-side", type=int, default=SERVER_FALLBACK_MAX_SIDE,
                   help="long side (px) of the copy the slow MMOD fallback searches when the detector finds no "
                        f"face; every other request waits meanwhile (default {SERVER_FALLBACK_MAX_SIDE}: about 2 s "
                        "on one CPU core; 0 = no fallback)")
    p.add_argument("--max-upload-mb", type=float, default=20, help="largest accepted upload in MB (default 20)")
    p.add_argument("--max-pixels", type=float, default=40e6, help="largest accepted photo in pixels (default 40e6)")
    p.add_argument("--max-output-pixels", type=float, default=100e6,
                   help="largest result (input pixels x upscale^2) a request may ask for (default 100e6)")
    p.add_argument("--max-queue", type=int, default=16,
                   help="requests that may wait for the single restore slot before new ones get 503 (default 16)")
    p.add_argument("--api-only", action="store_true", help="serve the HTTP API without the Gradio UI")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ModuleNotFoundError:
        raise UserError("`mmrface serve` needs uvicorn and gradio: pip install 'mmrface[web]'") from None
    from mmrface.hub.choose import announce, choose
    from mmrface.pipeline.restorer import Restorer
    from mmrface.web.app import create_app, remove_temp_root
    from mmrface.web.limits import Limits

    signal.signal(signal.SIGTERM, _stop)  # uvicorn shuts down gracefully, then re-raises it to us

    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    if not 1 <= args.upscale <= 4:
        raise UserError(f"--upscale must be in [1, 4] for the server, got {args.upscale}")
    if args.max_upload_mb <= 0 or args.max_pixels < 1 or args.max_output_pixels < 1:
        raise UserError("--max-upload-mb, --max-pixels and --max-output-pixels must be positive")
    if args.fallback_max_side < 0:
        raise UserError(f"--fallback-max-side must be >= 0 (0 = no fallback), got {args.fallback_max_side}")
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=int(args.max_pixels),
                    max_output_pixels=int(args.max_output_pixels), max_queue=int(args.max_queue))
    sock = bind_socket(args.host, args.port)  # a taken port fails before the weights are loaded or fetched
    choice = choose(args.weights, no_download=args.no_download)
    restorer = Restorer(choice.weights, device=args.device, upscale=args.upscale, fidelity=args.fidelity,
                        detector=args.detector, noise=args.noise)
    announce(choice, restorer, args.fidelity is not None)
    app = create_app(restorer, limits=limits, ui=not args.api_only, fallback_max_side=args.fallback_max_side)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"mmrface: note: listening on {args.host}, reachable from other machines; "
              f"there is no authentication", file=sys.stderr)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    where = "API at /v1/restore /v1/faces /v1/health" if args.api_only else \
        "UI at /, API at /v1/restore /v1/faces /v1/health"
    print(f"mmrface: serving on http://{shown}:{args.port}  ({where})", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, workers=1)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:  # SIGTERM, Ctrl-C or a crash: users' uploads and results do not outlive the server
        remove_temp_root()
    return 0


def _stop(signum, frame) -> None:
    """SIGTERM: leave through SystemExit, so that `finally` blocks and atexit handlers run (the
    default action would end the process on the spot and leave the temporary files behind)."""
    raise SystemExit(0)


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind host:port ourselves so that a taken port is one clear line, not a server log."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"--host {host!r}: cannot resolve ({exc.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port") from None
    sock.set_inheritable(True)
    return sock
