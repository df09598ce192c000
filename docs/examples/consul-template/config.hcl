# consul-template's side of the example: the settings docs/examples/haproxy-sync/config.toml replaces.
consul {
  address = "127.0.0.1:8500"
  token   = ""            # or CONSUL_HTTP_TOKEN
  retry {
    enabled     = true
    attempts    = 12
    max_backoff = "1m"
  }
}

# Wait for 2 s of quiet after a change, 10 s at most, before rendering.
wait {
  min = "2s"
  max = "10s"
}

template {
  source          = "/etc/haproxy/haproxy.cfg.ctmpl"
  destination     = "/etc/haproxy/haproxy.cfg"
  perms           = 0640
  backup          = true
  # Check the rendered file, then reload; a failing check leaves the new file on disk all the same.
  command         = "haproxy -c -f /etc/haproxy/haproxy.cfg && systemctl reload haproxy"
  command_timeout = "60s"
  error_on_missing_key = true
}
