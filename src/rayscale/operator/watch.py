"""Watch-driven reconciling: informers, object caches and a per-key work queue.

The operator's building blocks, in the shape of client-go's informers and work
queue, without Kubernetes-specific logic of their own:

- :class:`ObjectCache` mirrors one kind of object (RayClusters, their pods,
  their Services, the metadata of their token Secrets) in memory, indexed by
  the RayCluster they belong to. It is fed by an :class:`Informer` and by the
  operator's own write responses (a created pod is in the cache before its
  create call returns, so the next reconcile cannot miss it and create a
  duplicate). Writes of a resourceVersion older
  than what is cached are ignored, and a deleted object is never brought back
  by a late response.
- :class:`Informer` lists a kind once (server-side label selector), then
  watches it from the list's resourceVersion, with bookmarks, for as long as
  the operator runs; a watch that times out continues from the last version
  seen, and only "410 Gone" triggers a new list, which *replaces* the cache
  (objects deleted meanwhile are removed). An idle kind costs one long-lived
  watch request, renewed every ``server_timeout`` seconds, whatever the number
  of objects.
- :class:`WorkQueue` holds the keys (``namespace/name`` of RayClusters) that
  need a reconcile: a key is queued once however many events arrive before it
  is processed, and never handed to two workers at once (reconciles of one
  cluster are serialized). Delayed adds (retries after errors) wait on one
  timer thread that sleeps until the earliest deadline: with nothing pending
  it sleeps without waking up.

resourceVersions are compared as integers, which they are on every API server
backed by etcd; the API calls them opaque, so a version that is not an integer
is taken as newer than anything cached (the event wins, as it would without
the comparison).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import msgspec

log = logging.getLogger(__name__)

Obj = dict[str, Any]
ObjKey = tuple[str, str]  # (namespace, name)
# called with (index key, old object, new object) after a change; old/new None: added/deleted
ChangeHandler = Callable[[str | None, Obj | None, Obj | None], None]

TOMBSTONE_S = 300.0  # deleted uids are remembered this long against late write responses
#: Lists and watches of metadata only, as client-go's metadata informers ask for them.
METADATA_ONLY_ACCEPT = (
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,"
    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
)


def resource_version(obj: Obj | None) -> int | None:
    if obj is None:
        return None
    text = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(text))
    except (TypeError, ValueError):
        return None


def _older_or_same(new: Obj, cached: Obj) -> bool:
    """Whether ``new`` is known to be no newer than ``cached`` (same uid, rv <=)."""
    if _uid(new) != _uid(cached):
        return False
    new_rv, old_rv = resource_version(new), resource_version(cached)
    return new_rv is not None and old_rv is not None and new_rv <= old_rv


def _uid(obj: Obj) -> str | None:
    uid = (obj.get("metadata") or {}).get("uid")
    return str(uid) if uid else None


def object_key(obj: Obj) -> ObjKey:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def own_key(obj: Obj) -> str:
    """``namespace/name`` of an object: the index of a controller's own kind."""
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def origin_key(obj: Obj, crd: str, name_label: str, crd_label: str | None) -> str | None:
    """``namespace/name`` of the object of kind ``crd`` that ``obj`` was made for, from
    its labels (``crd_label``, when given, must say ``crd``); None for anything else."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    if crd_label is not None and labels.get(crd_label) != crd:
        return None
    name = labels.get(name_label)
    return f"{meta.get('namespace')}/{name}" if name else None


def owned_by(obj: Obj | None, uid: str | None) -> bool:
    """Whether ``obj`` has an owner reference to ``uid``."""
    refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return uid is not None and any(r.get("uid") == uid for r in refs)


class ObjectCache:
    """A thread-safe mirror of one kind of object, with one secondary index.

    ``index`` maps an object to the key it belongs to (for pods: the RayCluster
    ``namespace/name`` from the ``ray.io/cluster`` label), or None. ``on_change``
    is called, outside the lock, for every change that came from the API
    server's list or watch; the operator's own write responses (:meth:`upsert`,
    :meth:`mark_deleting`) update the cache silently, because the operator
    already acts on what it wrote.
    """

    def __init__(self, index: Callable[[Obj], str | None] | None = None,
                 on_change: ChangeHandler | None = None) -> None:
        self._index = index or (lambda obj: None)
        self._on_change = on_change
        self._lock = threading.Lock()
        self._objects: dict[ObjKey, Obj] = {}
        self._by_index: dict[str, dict[ObjKey, Obj]] = {}
        self._tombstones: dict[str, float] = {}  # uid -> monotonic time of deletion
        self._deleting: set[ObjKey] = set()  # deletes the operator asked for, not yet seen

    # ------------------------------------------------------------------ reads

    def get(self, namespace: str, name: str) -> Obj | None:
        with self._lock:
            return self._objects.get((namespace, name))

    def indexed(self, key: str) -> list[Obj]:
        with self._lock:
            return list(self._by_index.get(key, {}).values())

    def all_keys(self) -> list[ObjKey]:
        with self._lock:
            return list(self._objects)

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

    # ------------------------------------------------- from the list and watch

    def apply(self, kind: str, obj: Obj) -> None:
        """A watch event: ADDED, MODIFIED or DELETED."""
        changes: list[tuple[str | None, Obj | None, Obj | None]] = []
        with self._lock:
            if kind == "DELETED":
                self._delete(obj, changes)
            else:
                self._put(obj, changes)
        self._notify(changes)

    def replace(self, items: Iterable[Obj], list_rv: int | None,
                namespace: str | None = None) -> None:
        """A (re)list: the objects of ``namespace`` (None: all) are exactly ``items`` as of
        ``list_rv``. Cached objects missing from the list are deleted, unless the cache
        holds a newer version of them than the list (written by the operator after the
        list was taken: the watch that follows will report them)."""
        changes: list[tuple[str | None, Obj | None, Obj | None]] = []
        with self._lock:
            seen: set[ObjKey] = set()
            for obj in items:
                seen.add(object_key(obj))
                self._put(obj, changes)
            for key, cached in list(self._objects.items()):
                if key in seen or (namespace is not None and key[0] != namespace):
                    continue
                rv = resource_version(cached)
                if list_rv is None or rv is None or rv <= list_rv:
                    self._delete(cached, changes)
        self._notify(changes)

    # -------------------------------------------------- the operator's writes

    def upsert(self, obj: Obj) -> None:
        """An object as a write (create, patch) returned it; silently, newer only."""
        with self._lock:
            uid = _uid(obj)
            if uid is not None and uid in self._tombstones:
                return  # deleted before the response got here
            cached = self._objects.get(object_key(obj))
            if cached is not None and _older_or_same(obj, cached):
                return
            self._store(obj, cached)

    def mark_deleting(self, namespace: str, name: str) -> None:
        """The operator deleted it: it counts as terminating (a ``deletionTimestamp``)
        until the watch reports it so, or gone, even if an older update arrives first."""
        with self._lock:
            cached = self._objects.get((namespace, name))
            if cached is None:
                return
            self._deleting.add((namespace, name))
            self._store(cached, cached)

    # --------------------------------------------------------------- internals

    def _put(self, obj: Obj, changes: list[tuple[str | None, Obj | None, Obj | None]]) -> None:
        uid = _uid(obj)
        cached = self._objects.get(object_key(obj))
        if cached is not None and _older_or_same(obj, cached):
            return  # the operator's own write response got here first
        if uid is not None and uid in self._tombstones:
            return
        stored = self._store(obj, cached)
        changes.append((self._index(stored), cached, stored))

    def _delete(self, obj: Obj, changes: list[tuple[str | None, Obj | None, Obj | None]]) -> None:
        key = object_key(obj)
        uid = _uid(obj)
        now = time.monotonic()
        if uid is not None:
            self._tombstones[uid] = now
        if len(self._tombstones) > 1000:
            for stale in [u for u, t in self._tombstones.items() if now - t > TOMBSTONE_S]:
                del self._tombstones[stale]
        cached = self._objects.get(key)
        if cached is None or (uid is not None and _uid(cached) not in (None, uid)):
            return  # already gone, or the name now belongs to a newer object
        del self._objects[key]
        self._deleting.discard(key)
        index = self._index(cached)
        if index is not None:
            members = self._by_index.get(index, {})
            members.pop(key, None)
            if not members:
                self._by_index.pop(index, None)
        changes.append((index, cached, None))

    def _store(self, obj: Obj, cached: Obj | None) -> Obj:
        key = object_key(obj)
        if key in self._deleting:
            meta = obj.get("metadata") or {}
            if meta.get("deletionTimestamp"):
                self._deleting.discard(key)  # the API server says so now
            else:
                obj = {**obj, "metadata": {**meta, "deletionTimestamp": "requested"}}
        if cached is not None:
            old_index = self._index(cached)
            if old_index is not None:
                members = self._by_index.get(old_index, {})
                members.pop(key, None)
                if not members:
                    self._by_index.pop(old_index, None)
        self._objects[key] = obj
        index = self._index(obj)
        if index is not None:
            self._by_index.setdefault(index, {})[key] = obj
        return obj

    def _notify(self, changes: list[tuple[str | None, Obj | None, Obj | None]]) -> None:
        if self._on_change is None:
            return
        for index, old, new in changes:
            try:
                self._on_change(index, old, new)
            except Exception:
                log.exception("change handler failed")


# ------------------------------------------------------------------ informer


class Gone(Exception):
    """410: the resourceVersion to watch from is too old; list again."""


@dataclass
class InformerStats:
    lists: int = 0
    watches: int = 0
    events: int = 0
    relists: int = 0


@dataclass
class Informer:
    """List, then watch, one kind into an :class:`ObjectCache`, in a thread of its own.

    ``path`` is the collection's API path with ``{ns}`` for the namespaced form
    (``api/v1/namespaces/{ns}/pods``), ``all_path`` the cluster-wide one;
    ``namespace`` None watches every namespace.
    """

    name: str
    http: httpx.Client
    cache: ObjectCache
    all_path: str
    path: str
    namespace: str | None = None
    label_selector: str | None = None
    server_timeout_s: int = 300
    # list items of built-in kinds carry no apiVersion and kind (watch events do)
    api_version: str | None = None
    kind: str | None = None
    #: Only the objects' metadata (``PartialObjectMetadata``): what a cache needs of
    #: objects whose contents the operator must not hold, such as Secrets.
    metadata_only: bool = False
    synced: threading.Event = field(default_factory=threading.Event)
    stats: InformerStats = field(default_factory=InformerStats)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, wait_s: float = 5.0) -> None:
        """Ask the thread to stop: it does at its next event or watch renewal. Its
        response is not closed under it (a read on a socket closed by another thread can
        spin); it is a daemon, so a process may also just exit."""
        self._stop.set()
        if self._thread is not None and wait_s > 0:
            self._thread.join(timeout=wait_s)

    @property
    def url(self) -> str:
        return self.all_path if self.namespace is None else self.path.format(ns=self.namespace)

    def _run(self) -> None:
        rv: str | None = None
        failures = 0
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list()
                    self.synced.set()
                started = time.monotonic()
                rv = self._watch(rv)
                failures = 0
                if time.monotonic() - started < 1.0:  # ended at once: never a busy loop
                    self._stop.wait(1.0)
            except Gone:
                log.info("%s: resourceVersion too old, listing again", self.name)
                self.stats.relists += 1
                rv = None
            except Exception as exc:  # network, API errors: retry, from where we were
                if self._stop.is_set():
                    return
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 6))
                log.warning("%s: watch failed (%s); retrying in %.1f s", self.name, exc, delay)
                self._stop.wait(delay)

    def _headers(self) -> dict[str, str]:
        return {"Accept": METADATA_ONLY_ACCEPT} if self.metadata_only else {}

    def _params(self) -> dict[str, str]:
        params = {}
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        return params

    def _list(self) -> str:
        items: list[Obj] = []
        params = {**self._params(), "limit": "500"}
        rv = ""
        while True:
            resp = self.http.get(self.url, params=params, headers=self._headers())
            if resp.status_code == 410:  # the continue token expired: from the start
                items, params = [], {**self._params(), "limit": "500"}
                continue
            resp.raise_for_status()
            doc = msgspec.json.decode(resp.content)
            meta = doc.get("metadata") or {}
            rv = rv or str(meta.get("resourceVersion") or "")
            for item in doc.get("items") or []:
                if self.metadata_only:
                    item = _metadata_of(item)
                if self.api_version is not None:
                    item.setdefault("apiVersion", self.api_version)
                if self.kind is not None:
                    item.setdefault("kind", self.kind)
                items.append(item)
            if not meta.get("continue"):
                break
            params["continue"] = meta["continue"]
        self.stats.lists += 1
        try:
            list_rv: int | None = int(rv)
        except ValueError:
            list_rv = None
        self.cache.replace(items, list_rv, self.namespace)
        return rv

    def _watch(self, rv: str) -> str:
        params = {**self._params(), "watch": "true", "allowWatchBookmarks": "true",
                  "resourceVersion": rv, "timeoutSeconds": str(self.server_timeout_s)}
        timeout = httpx.Timeout(10.0, read=self.server_timeout_s + 30.0)
        self.stats.watches += 1
        with self.http.stream("GET", self.url, params=params, timeout=timeout,
                              headers=self._headers()) as resp:
            if resp.status_code == 410:
                raise Gone()
            resp.raise_for_status()
            for event in self._events(resp.iter_bytes()):
                if self._stop.is_set():
                    break
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if kind == "BOOKMARK":
                    continue
                if self.metadata_only:
                    obj = _metadata_of(obj)
                self.stats.events += 1
                self.cache.apply(str(kind), obj)
        return rv

    @staticmethod
    def _events(chunks: Iterator[bytes]) -> Iterator[Obj]:
        """One JSON document per line, as the API server streams watch events."""
        buffer = b""
        for chunk in chunks:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    yield msgspec.json.decode(line)
        if buffer.strip():
            yield msgspec.json.decode(buffer)


def _metadata_of(obj: Obj) -> Obj:
    """Only what a metadata-only watch returns, even from a server that sent more."""
    return {k: v for k, v in obj.items() if k in ("apiVersion", "kind", "metadata")}


# ---------------------------------------------------------------- work queue


class WorkQueue:
    """Keys to process, each queued at most once and processed by one worker at a time.

    Like client-go's workqueue: :meth:`add` while a key is being processed marks
    it dirty, and :meth:`done` puts it back once, so the worker sees the latest
    state without two workers ever holding the same key.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._delayed: list[tuple[float, str]] = []  # heap of (deadline, key)
        self._deadline: dict[str, float] = {}
        self._shutdown = False
        self._timer = threading.Thread(target=self._timer_loop, name="workqueue-timer",
                                       daemon=True)
        self._timer.start()

    def add(self, key: str) -> None:
        with self._cond:
            if self._shutdown or key in self._dirty:
                return
            self._dirty.add(key)
            if key not in self._processing:
                self._queue.append(key)
                self._cond.notify_all()

    def add_after(self, key: str, delay_s: float) -> None:
        if delay_s <= 0:
            self.add(key)
            return
        deadline = time.monotonic() + delay_s
        with self._cond:
            if self._shutdown:
                return
            current = self._deadline.get(key)
            if current is not None and current <= deadline:
                return
            self._deadline[key] = deadline
            heapq.heappush(self._delayed, (deadline, key))
            self._cond.notify_all()

    def get(self, timeout_s: float | None = None) -> str | None:
        """The next key (now being processed), or None on shutdown or timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._queue or self._shutdown, timeout_s):
                return None
            if self._shutdown:
                return None
            key = self._queue.popleft()
            self._dirty.discard(key)
            self._processing.add(key)
            return key

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty and not self._shutdown:
                self._queue.append(key)
                self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._deadline)

    def delayed(self) -> int:
        with self._cond:
            return len(self._deadline)

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
        self._timer.join(timeout=1)

    def _timer_loop(self) -> None:
        with self._cond:
            while not self._shutdown:
                now = time.monotonic()
                due = []
                while self._delayed and self._delayed[0][0] <= now:
                    deadline, key = heapq.heappop(self._delayed)
                    if self._deadline.get(key) == deadline:
                        del self._deadline[key]
                        due.append(key)
                for key in due:
                    if key not in self._dirty:
                        self._dirty.add(key)
                        if key not in self._processing:
                            self._queue.append(key)
                if due:
                    self._cond.notify_all()
                # nothing delayed: sleep until add_after() or shutdown notifies
                wait = self._delayed[0][0] - now if self._delayed else None
                self._cond.wait(wait)


def serve_queue(
    informers: Iterable[Informer], queue: WorkQueue, stopping: threading.Event,
    process: Callable[[str], None],
) -> None:
    """A controller's worker: once every informer has listed (act only on complete
    caches), process queued keys until the queue shuts down or ``stopping`` is set.

    The queue hands a key to one worker at a time; ``done`` lets it go to the next.
    """
    for informer in informers:
        while not informer.synced.wait(0.5):
            if stopping.is_set():
                return
    while not stopping.is_set():
        key = queue.get()
        if key is None:
            return
        try:
            process(key)
        finally:
            queue.done(key)


def start_workers(informers: Iterable[Informer], work: Callable[[], None], name: str,
                  count: int) -> list[threading.Thread]:
    """A controller's start: its informers, then ``count`` (at least 1) daemon threads
    running ``work`` (its loop over the work queue), named ``<name>-<i>``."""
    for informer in informers:
        informer.start()
    threads = [threading.Thread(target=work, name=f"{name}-{index}", daemon=True)
               for index in range(max(1, count))]
    for thread in threads:
        thread.start()
    return threads


def stop_workers(queue: WorkQueue, informers: Iterable[Informer],
                 threads: Iterable[threading.Thread], wait_s: float = 5.0) -> None:
    """A controller's stop: no more keys handed out, the informers told to stop (their
    threads, blocked reading a watch, are daemons), the workers given ``wait_s`` in all
    to finish what they hold."""
    queue.shutdown()
    for informer in informers:
        informer.stop(wait_s=0.0)
    deadline = time.monotonic() + wait_s
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))


@dataclass(frozen=True)
class Watched:
    """One kind a controller watches: its cache, where it lives, and which objects."""

    name: str  # the informers' name prefix
    cache: ObjectCache
    prefix: str  # "api/v1", "apis/ray.io/v1"
    plural: str
    label_selector: str | None
    api_version: str
    kind: str


def informers_for(kinds: Iterable[Watched], http: Any, namespaces: Iterable[str],
                  server_timeout_s: int) -> list[Informer]:
    """An informer per kind and namespace (``namespaces`` empty: one cluster-wide each)."""
    scopes: list[str | None] = list(namespaces) or [None]
    return [Informer(
        name=f"{w.name}@{ns or '*'}", http=http, cache=w.cache,
        all_path=f"{w.prefix}/{w.plural}", path=f"{w.prefix}/namespaces/{{ns}}/{w.plural}",
        namespace=ns, label_selector=w.label_selector, server_timeout_s=server_timeout_s,
        api_version=w.api_version, kind=w.kind,
    ) for w in kinds for ns in scopes]
