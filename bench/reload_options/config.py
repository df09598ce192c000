"""The variants under test and the config of the HAProxy under test (the backends are bench/common's pool).

Why the configs are this small: the question is what the soft-stop options do to a reload, so
everything else is held still — one frontend, one round-robin backend of never-bottleneck servers,
no health checks (a check result must not differ between workers), the same timeouts as the
default template. Only the lines a variant names change between variants.

``option idle-close-on-response`` belongs in ``defaults``; ``close-spread-time`` and
``hard-stop-after`` are ``global`` keywords in HAProxy 2.6, so a variant carries lines for both.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """One set of soft-stop options: the lines it adds to ``global`` and to ``defaults``."""

    name: str
    label: str
    global_lines: tuple[str, ...] = ()
    defaults_lines: tuple[str, ...] = ()
    reloads: bool = True  # False only for the no-reload baseline

    def describe(self) -> str:
        lines = [*self.defaults_lines, *self.global_lines]
        return ", ".join(lines) if lines else "(no option)"


IDLE_CLOSE = "option idle-close-on-response"

BASELINE = Variant("baseline", "no reload (baseline)", reloads=False)
VARIANTS: tuple[Variant, ...] = (
    Variant("plain", "plain"),
    Variant("idle-close", "idle-close", defaults_lines=(IDLE_CLOSE,)),
    Variant("idle-close+spread", "idle-close + close-spread-time 5s",
            global_lines=("close-spread-time 5s",), defaults_lines=(IDLE_CLOSE,)),
    Variant("idle-close+hard-stop", "idle-close + hard-stop-after 30s",
            global_lines=("hard-stop-after 30s",), defaults_lines=(IDLE_CLOSE,)),
)


def long_lived_variants(hard_stop: str) -> tuple[Variant, ...]:
    """The pair the long-lived scenario compares: what the template has now, and that + hard-stop-after.

    ``hard_stop`` is shorter than the streams on purpose (see :mod:`.runner`): a hard stop only
    matters for a connection that outlives it.
    """
    return (
        Variant("idle-close", "idle-close", defaults_lines=(IDLE_CLOSE,)),
        Variant("idle-close+hard-stop", f"idle-close + hard-stop-after {hard_stop}",
                global_lines=(f"hard-stop-after {hard_stop}",), defaults_lines=(IDLE_CLOSE,)),
    )


@dataclass(frozen=True)
class Ports:
    """Every TCP port one invocation uses, all on 127.0.0.1."""

    frontend: int
    backends: tuple[int, ...]
    streamer: int


def under_test_config(variant: Variant, ports: Ports) -> str:
    """The HAProxy under test: keep-alive frontend, ``/stream`` to the streamer, the rest round-robin."""
    global_extra = "".join(f"    {line}\n" for line in variant.global_lines)
    defaults_extra = "".join(f"    {line}\n" for line in variant.defaults_lines)
    servers = "".join(f"    server b{i} 127.0.0.1:{port}\n" for i, port in enumerate(ports.backends, 1))
    return (
        "# reload-options benchmark: HAProxy under test, variant " + variant.name + "\n"
        "global\n"
        "    maxconn 2000\n"
        f"{global_extra}"
        "\n"
        "defaults\n"
        "    mode http\n"
        f"{defaults_extra}"
        "    timeout connect 5s\n"
        "    timeout client 30s\n"
        "    timeout server 30s\n"
        "    timeout http-request 10s\n"
        "    timeout http-keep-alive 10s\n"
        "\n"
        "frontend http\n"
        f"    bind 127.0.0.1:{ports.frontend}\n"
        "    use_backend stream if { path_beg /stream }\n"
        "    default_backend app\n"
        "\n"
        "backend app\n"
        "    balance roundrobin\n"
        f"{servers}"
        "\n"
        "backend stream\n"
        f"    server s1 127.0.0.1:{ports.streamer}\n"
    )
