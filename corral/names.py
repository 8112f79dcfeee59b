"""Kubernetes' naming rules (apimachinery's validation), as pure checks.

Each `check_*` returns a list of problems (empty when the value is valid), so a
caller can prefix them with the field path it is validating.
"""

from __future__ import annotations

import re

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_VAR_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def check_dns1123_label(value: str) -> list[str]:
    """Pod, Service and Namespace names: lower-case alphanumerics and '-', at most 63."""
    problems = []
    if len(value) > DNS1123_LABEL_MAX:
        problems.append(f"must be no more than {DNS1123_LABEL_MAX} characters")
    if not _DNS1123_LABEL.match(value):
        problems.append(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
            "or '-', and must start and end with an alphanumeric character "
            "(e.g. 'my-name', or '123-abc')"
        )
    return problems


def check_dns1123_subdomain(value: str) -> list[str]:
    """Most object names: lower-case alphanumerics, '-' and '.', at most 253."""
    problems = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        problems.append(f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters")
    if not _DNS1123_SUBDOMAIN.match(value):
        problems.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
            "characters, '-' or '.', and must start and end with an alphanumeric character "
            "(e.g. 'example.com')"
        )
    return problems


def check_qualified_name(value: str) -> list[str]:
    """Label and annotation keys: optional DNS-subdomain prefix and '/', then a name."""
    prefix, slash, name = value.rpartition("/")
    problems = []
    if slash:
        if not prefix:
            problems.append("prefix part must be non-empty")
        else:
            problems.extend(f"prefix part {p}" for p in check_dns1123_subdomain(prefix))
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > 63:
        problems.append("name part must be no more than 63 characters")
    elif not _QUALIFIED_NAME.match(name):
        problems.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character (e.g. 'MyName', or 'my.name', "
            "or '123-abc')"
        )
    return problems


def check_label_value(value: str) -> list[str]:
    problems = []
    if len(value) > 63:
        problems.append("must be no more than 63 characters")
    if not _LABEL_VALUE.match(value):
        problems.append(
            "a valid label must be an empty string or consist of alphanumeric characters, "
            "'-', '_' or '.', and must start and end with an alphanumeric character"
        )
    return problems


def check_env_var_name(value: str) -> list[str]:
    if not _ENV_VAR_NAME.match(value):
        return [
            "a valid environment variable name must consist of alphabetic characters, "
            "digits, '_', '-', or '.', and must not start with a digit"
        ]
    return []


def check_port_name(value: str) -> list[str]:
    """Named ports (IANA service names): at most 15, lower-case, at least one letter."""
    problems = []
    if len(value) > 15:
        problems.append("must be no more than 15 characters")
    if not _IANA_SVC_NAME.match(value):
        problems.append("must contain only lower-case alphanumerics and '-' (e.g. 'http')")
    elif "--" in value:
        problems.append("must not contain consecutive hyphens")
    elif not re.search(r"[a-z]", value):
        problems.append("must contain at least one letter (a-z)")
    return problems


def is_c_identifier(value: str) -> bool:
    return bool(_C_IDENTIFIER.match(value))
