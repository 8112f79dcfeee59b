"""A container's environment, resolved as kubelet does. Pure.

envFrom sources first (in order), then env entries (each may use $(VAR) of
the ones before it); values from ConfigMaps, Secrets and the pod's own fields.
A missing ConfigMap/Secret or key that is not optional is a
`ContainerConfigError` whose message is kubelet's, and it becomes the
container's CreateContainerConfigError.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from corral import names
from corral.v1 import core_pb2


class ContainerConfigError(Exception):
    """The container cannot be configured (reason CreateContainerConfigError)."""


ConfigMapGetter = Callable[[str, str], "core_pb2.ConfigMap | None"]
SecretGetter = Callable[[str, str], "core_pb2.Secret | None"]

_LABEL_PATH = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ is a literal $,
    anything else is kept as written."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    if name in env:
                        out.append(env[name])
                    else:
                        out.append(text[i:end + 1])
                    i = end + 1
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


def field_value(pod: core_pb2.Pod, path: str, *, pod_ip: str, host_ip: str) -> str:
    meta = pod.metadata
    simple = {
        "metadata.name": meta.name,
        "metadata.namespace": meta.namespace,
        "metadata.uid": meta.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.hostname": pod.spec.hostname,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return simple[path]
    m = _LABEL_PATH.match(path)
    if m:
        source = meta.labels if m.group(1) == "labels" else meta.annotations
        return source.get(m.group(2), "")
    if path == "metadata.labels":
        return "\n".join(f'{k}="{v}"' for k, v in sorted(meta.labels.items()))
    if path == "metadata.annotations":
        return "\n".join(f'{k}="{v}"' for k, v in sorted(meta.annotations.items()))
    raise ContainerConfigError(f"unsupported fieldRef fieldPath {path!r}")


def _secret_value(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def resolve(pod: core_pb2.Pod, container: core_pb2.Container, *, pod_ip: str, host_ip: str,
            get_configmap: ConfigMapGetter, get_secret: SecretGetter) -> dict[str, str]:
    ns = pod.metadata.namespace
    env: dict[str, str] = {}

    for src in container.env_from:
        if src.HasField("config_map_ref"):
            ref = src.config_map_ref
            cm = get_configmap(ns, ref.name)
            if cm is None:
                if ref.optional:
                    continue
                raise ContainerConfigError(f'configmap "{ref.name}" not found')
            items: dict[str, str] = dict(cm.data)
            items.update({k: v.decode("utf-8", errors="replace")
                          for k, v in cm.binary_data.items()})
        elif src.HasField("secret_ref"):
            ref = src.secret_ref
            secret = get_secret(ns, ref.name)
            if secret is None:
                if ref.optional:
                    continue
                raise ContainerConfigError(f'secret "{ref.name}" not found')
            items = {k: _secret_value(v) for k, v in secret.data.items()}
        else:
            continue
        for key, value in items.items():
            name = src.prefix + key
            # Kubernetes skips keys that are not valid variable names (and warns).
            if names.check_env_var_name(name):
                continue
            env[name] = value

    for var in container.env:
        if not var.HasField("value_from"):
            env[var.name] = expand(var.value, env)
            continue
        source = var.value_from
        if source.HasField("config_map_key_ref"):
            cm_key = source.config_map_key_ref
            cm = get_configmap(ns, cm_key.name)
            if cm is None:
                if cm_key.optional:
                    continue
                raise ContainerConfigError(f'configmap "{cm_key.name}" not found')
            if cm_key.key in cm.data:
                env[var.name] = cm.data[cm_key.key]
            elif cm_key.key in cm.binary_data:
                env[var.name] = cm.binary_data[cm_key.key].decode("utf-8", errors="replace")
            elif cm_key.optional:
                continue
            else:
                raise ContainerConfigError(
                    f"couldn't find key {cm_key.key} in ConfigMap {ns}/{cm_key.name}")
        elif source.HasField("secret_key_ref"):
            sec_key = source.secret_key_ref
            secret = get_secret(ns, sec_key.name)
            if secret is None:
                if sec_key.optional:
                    continue
                raise ContainerConfigError(f'secret "{sec_key.name}" not found')
            if sec_key.key in secret.data:
                env[var.name] = _secret_value(secret.data[sec_key.key])
            elif sec_key.optional:
                continue
            else:
                raise ContainerConfigError(
                    f"couldn't find key {sec_key.key} in Secret {ns}/{sec_key.name}")
        elif source.HasField("field_ref"):
            env[var.name] = field_value(pod, source.field_ref.field_path, pod_ip=pod_ip,
                                        host_ip=host_ip)
        else:
            env[var.name] = ""
    return env


def command_line(container: core_pb2.Container, env: Mapping[str, str]
                 ) -> tuple[list[str] | None, list[str] | None]:
    """(entrypoint, cmd) for Podman: Kubernetes' command replaces the image's
    ENTRYPOINT and args its CMD; None keeps the image's."""
    entrypoint = [expand(c, env) for c in container.command] if container.command else None
    cmd = [expand(a, env) for a in container.args] if container.args else None
    if entrypoint is not None and cmd is None:
        # command without args must not inherit the image's CMD (Kubernetes' rule).
        cmd = []
    return entrypoint, cmd
