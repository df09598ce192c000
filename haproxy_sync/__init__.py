"""haproxy-sync keeps HAProxy in step with Consul without dropping a request.

Data flows one way: Consul -> :mod:`consul` (watches) -> :mod:`catalog` (snapshots) -> :mod:`daemon`
-> :mod:`render` -> :mod:`haproxy` (validate, swap, reload) -> HAProxy.

Exceptions, by where they start:

    ConfigError        config.py   settings that cannot be used (all problems at once)
    TemplateError      render.py   a template that cannot load or render (file:line: message)
    ConsulError        consul.py   a Consul read that failed (kind: refused, leader, acl, ...)
    HAProxyError       haproxy.py  validation, write or reload of HAProxy failed
      ValidationError              `haproxy -c` rejected a rendered config
      SocketError                  a CLI socket could not be reached or did not answer
      ReloadError      master.py   HAProxy did not confirm a new worker (its ReloadFailure says why)
"""

try:
    from haproxy_sync._version import __version__  # written by setuptools-scm when the package is built
except ImportError:  # a checkout used without installing it
    __version__ = "0.0.0+unknown"
