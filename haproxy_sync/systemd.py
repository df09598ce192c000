"""The systemd unit for haproxy-sync, printed by ``haproxy-sync systemd-unit`` and installed by Ansible.

One source for the unit: the Ansible role runs the command on the host rather than carrying a copy.
``Type=notify``: READY=1 is sent after the first successful apply, and the loop pings the watchdog,
so a stuck loop is restarted. The sandboxing keeps the daemon to what it needs: the HAProxy config
directory and state directory to write, the HAProxy sockets to talk to, and the network for Consul.
"""

from __future__ import annotations

UNIT_TEMPLATE = """\
[Unit]
Description=haproxy-sync: keeps HAProxy in step with Consul
Documentation=https://github.com/haproxy-sync/haproxy-sync
After=network-online.target haproxy.service consul.service
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_path} run --config {config_path}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2s
WatchdogSec=30s
TimeoutStopSec=10s
# One connection to Consul per watched service (consul.max_connections, 4096 by default), and more.
LimitNOFILE=65536
User={user}
# No Group=: the process keeps the user's own primary group, which owns its config and token files
# (systemd's initgroups() would not add it back if Group= named another); HAProxy's group comes as a
# supplementary one, for the master and admin sockets.
SupplementaryGroups={group}
UMask=0027

NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/etc/haproxy /var/lib/haproxy
ReadOnlyPaths=/etc/haproxy-sync
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=all
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# No MemoryDenyWriteExecute=: the `haproxy -c` the daemon runs inherits it, and HAProxy's PCRE2 JIT
# needs writable-executable memory to compile the template's regexes; every check would fail.
RemoveIPC=yes
CapabilityBoundingSet=
AmbientCapabilities=
# AF_NETLINK: the local addresses (sync.networks) are read with getifaddrs(), which asks the kernel over netlink.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallArchitectures=native
DevicePolicy=closed

[Install]
WantedBy=multi-user.target
"""


def unit_text(*, exec_path: str, user: str, group: str, config_path: str) -> str:
    return UNIT_TEMPLATE.format(exec_path=exec_path, user=user, group=group, config_path=config_path)
