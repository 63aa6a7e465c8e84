"""A TCP proxy between services and PostgreSQL that a test switches between forwarding, refusing
connections and hanging: the database going away or hanging, on demand."""

import contextlib
import socket
import threading


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    """127.0.0.1:<port> -> the database: `forward`, `refuse` (nothing listens, open connections cut)
    or `hang` (connections accepted, never answered)."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream, self.port = upstream, free_port()
        self.mode = "forward"
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.lock = threading.Lock()
        self._listen()

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(256)
        listener.settimeout(0.1)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while self.listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self.lock:
                self.sockets.append(client)
            if self.mode == "hang":
                continue  # accepted; nothing is ever answered
            upstream = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        for s in (source, target):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _cut(self) -> None:
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def refuse(self) -> None:
        self.mode = "refuse"
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.close()
        self._cut()

    def hang(self) -> None:
        self._cut()
        self.mode = "hang"
        if self.listener is None:
            self._listen()

    def forward(self) -> None:
        self._cut()
        self.mode = "forward"
        if self.listener is None:
            self._listen()

    def close(self) -> None:
        self.refuse()
