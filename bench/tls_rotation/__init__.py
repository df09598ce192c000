"""TLS-rotation benchmark: a certificate rotated 20 times under HTTPS keep-alive load, two ways side by side.

(A) haproxy-sync's way: the real daemon with ``[tls] enabled = true`` watches ``tls.cert_dir``; a new
``default.pem`` written aside and renamed in is applied on HAProxy's Runtime API (``set ssl cert``,
``commit ssl cert``), with no reload. (B) rotation by reload, what consul-template does: the same
HAProxy config shape with ``crt <file>`` on the HTTPS bind, the file replaced atomically, then
``reload`` on the master socket (bench/common's ``reload_command``, the line consul-template runs).

Both run under ``wrk`` on kept-alive HTTPS connections; after each rotation a fresh TLS handshake is
made until it shows the new certificate. Reported per mode: requests, failed requests, reloads,
HAProxy workers started and the rotation latency.

See ``python -m bench.tls_rotation --help``. Not a test: nothing asserts.
"""
