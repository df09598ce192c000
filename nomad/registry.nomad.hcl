# The Docker registry that holds the cabify images, on static port 5000. Its storage is the
# Nomad host volume "registry" (configured by the nomad role on the hosts of the `registry`
# inventory group), so images survive restarts and reschedules of the container.

variable "image" {
  type        = string
  description = "Registry image, pinned to an exact tag."
  default     = "registry:2.8.3"
}

variable "datacenters" {
  type        = list(string)
  description = "Nomad datacenters to run in."
  default     = ["dc1"]
}

job "registry" {
  datacenters = var.datacenters
  type        = "service"

  # A new registry version (Nomad's update block, developer.hashicorp.com/nomad/docs/job-specification/update):
  # one allocation, so max_parallel 1 replaces it in place, stop then start; no canary, since a second
  # registry could not bind static port 5000 on the host that holds the volume. It counts as healthy once
  # its Consul check (health_check "checks") has passed for min_healthy_time 20s, two check intervals of
  # 10s, so one lucky answer right after start is not enough; healthy_deadline 2m covers an image pull
  # and a start, and auto_revert puts the last stable version back when it does not get there.
  # No migrate block (job-specification/migrate): the host volume exists on one client only, so a drain
  # of that client stops the registry until the client is back (pulls fail meanwhile; the running cabify
  # instances keep serving; docs/deployment.md).
  update {
    max_parallel     = 1
    health_check     = "checks"
    min_healthy_time = "20s"
    healthy_deadline = "2m"
    auto_revert      = true
  }

  group "registry" {
    count = 1

    volume "registry" {
      type      = "host"
      source    = "registry"
      read_only = false
    }

    network {
      port "http" {
        static = 5000
        to     = 5000
      }
    }

    restart {
      attempts = 5
      interval = "5m"
      delay    = "10s"
      mode     = "delay"
    }

    service {
      name = "registry"
      port = "http"

      check {
        name     = "registry-api"
        type     = "http"
        path     = "/v2/"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "registry" {
      driver = "docker"

      config {
        image = var.image
        ports = ["http"]
      }

      volume_mount {
        volume      = "registry"
        destination = "/var/lib/registry"
        read_only   = false
      }

      env {
        REGISTRY_HTTP_ADDR              = "0.0.0.0:5000"
        REGISTRY_STORAGE_DELETE_ENABLED = "true"
      }

      resources {
        cpu    = 200
        memory = 256
      }

      logs {
        max_files     = 3
        max_file_size = 10
      }
    }
  }
}
