# cabify: the demo HTTP service that HAProxy (through haproxy-sync) balances over.
# Submitted by the Ansible cabify role:
#   nomad job run -var version=1.0.1 -var registry=10.0.0.21:5000 cabify.nomad.hcl
# Zero-downtime updates: one canary first; the old allocations keep serving until the new ones
# pass their Consul health check for min_healthy_time; a failed deployment rolls back by itself.

variable "version" {
  type        = string
  description = "Image tag of cabify to run (the role builds and pushes it)."
  default     = "1.0.0"
}

variable "count" {
  type        = number
  description = "Number of cabify instances."
  default     = 7
}

variable "registry" {
  type        = string
  description = "Registry (host:port) that holds the cabify image."
  default     = "127.0.0.1:5000"
}

variable "datacenters" {
  type        = list(string)
  description = "Nomad datacenters to run in."
  default     = ["dc1"]
}

job "cabify" {
  datacenters = var.datacenters
  type        = "service"

  update {
    max_parallel      = 1
    canary            = 1
    auto_promote      = true
    auto_revert       = true
    health_check      = "checks"
    min_healthy_time  = "10s"
    healthy_deadline  = "2m"
    progress_deadline = "5m"
    stagger           = "10s"
  }

  group "cabify" {
    count = var.count

    # One instance per client where there are enough clients; never all on one node.
    spread {
      attribute = "${node.unique.id}"
    }

    network {
      port "http" {
        to = 8080
      }
    }

    # Consul deregisters the instance (so haproxy-sync drains it) before the task is stopped.
    shutdown_delay = "5s"

    restart {
      attempts = 3
      interval = "2m"
      delay    = "10s"
      mode     = "delay"
    }

    reschedule {
      delay          = "30s"
      delay_function = "exponential"
      max_delay      = "5m"
      unlimited      = true
    }

    service {
      name = "cabify"
      port = "http"
      tags = ["http"]

      meta {
        version = var.version
      }

      check {
        name     = "cabify-health"
        type     = "http"
        path     = "/health"
        interval = "5s"
        timeout  = "2s"

        check_restart {
          limit = 3
          grace = "10s"
        }
      }
    }

    task "cabify" {
      driver       = "docker"
      kill_timeout = "10s"

      config {
        image = "${var.registry}/cabify:${var.version}"
        ports = ["http"]
      }

      env {
        CABIFY_VERSION = var.version
        PORT           = "8080"
      }

      resources {
        cpu    = 100
        memory = 64
      }

      logs {
        max_files     = 3
        max_file_size = 10
      }
    }
  }
}
