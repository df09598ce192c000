# cabify: the demo HTTP service that HAProxy (through haproxy-sync) balances over.
# Submitted by the Ansible cabify role (site.yml: production; branch.yml: one job per branch):
#   nomad job run -var version=1.0.1 -var registry=10.0.0.21:5000 cabify.nomad.hcl
#   nomad job run -var branch=feature-x -var version=feature-x-0a1b2c3d4e5f -var count=1 cabify.nomad.hcl
# Zero-downtime updates: one canary first; the old allocations keep serving until the new ones
# pass their Consul health check for min_healthy_time; a failed deployment rolls back by itself.
# The canary carries canary_tags, and haproxy-sync sends it canary_share of the requests (not its
# count's share) until it is promoted; -var auto_promote=false holds it there for a look first.
#
# Branches: "main" is production, job and Consul service `cabify` as before, routed by the
# service haproxy-sync has in its config (its default backend). Any other branch runs as job and
# service `cabify-<branch>`, tagged for haproxy-sync's discovery with the host <branch>.<domain>
# in the service meta, so haproxy-sync routes it with no change to its own config.

variable "version" {
  type        = string
  description = "Image tag of cabify to run (the role builds and pushes it)."
  default     = "1.0.0"
}

variable "count" {
  type        = number
  description = "Number of cabify instances (branch.yml runs branches with 1, production with cabify_count)."
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

variable "branch" {
  type        = string
  description = "Git branch this job runs: \"main\" is production (job and service cabify), any other runs as cabify-<branch>."
  default     = "main"

  # Checked here so that a bad name fails at `nomad job plan/run`, not later as a Consul service
  # name or a Host header nobody can send. 40 leaves room in DNS's 63 for the "cabify-" prefix.
  validation {
    condition     = strlen(var.branch) >= 1 && regex_replace(var.branch, "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$", "") == ""
    error_message = "The branch must be a lowercase DNS label of 1 to 40 characters: a-z, 0-9 and \"-\", neither first nor last a \"-\"."
  }
}

variable "domain" {
  type        = string
  description = "DNS domain of the environments: production answers on <domain>, a branch on <branch>.<domain> (point *.<domain> at the edge)."
  default     = "cabify.internal"

  validation {
    condition     = strlen(var.domain) >= 1 && strlen(var.domain) <= 200 && regex_replace(var.domain, "^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$", "") == ""
    error_message = "The domain must be a lowercase DNS name such as cabify.internal."
  }
}

variable "routing_tag" {
  type        = string
  description = "Consul tag that haproxy-sync routes by (its discovery tag, \"haproxy-sync\" unless configured otherwise)."
  default     = "haproxy-sync"
}

variable "canary_tag" {
  type        = string
  description = "Consul tag of canary allocations (canary_tags): haproxy-sync sends them canary_share of the requests."
  default     = "canary"
}

variable "canary_share" {
  type        = string
  description = "Share of requests the canaries get until promoted, whatever their number (\"10%\"); branches ask for it in their service meta, production in haproxy-sync's config."
  default     = "10%"
}

variable "auto_promote" {
  type        = bool
  description = "Promote the canary once healthy (true), or hold it at canary_share until `nomad deployment promote` (false)."
  default     = true
}

locals {
  production = var.branch == "main"
  # Job ID and Consul service name: production keeps the name it always had.
  name = local.production ? "cabify" : "cabify-${var.branch}"
  # Host header haproxy-sync routes to this service (service meta haproxy-sync-host).
  host = local.production ? var.domain : "${var.branch}.${var.domain}"
  # Production is routed by the service in haproxy-sync's own config, so it does not carry the
  # discovery tag: the same service would otherwise reach haproxy-sync twice.
  tags = local.production ? ["http"] : ["http", var.routing_tag]
  # A canary allocation carries the same tags (so discovery still finds it) plus the canary tag; Nomad
  # puts the plain tags back when it promotes the deployment.
  canary_tags = local.production ? ["http", var.canary_tag] : ["http", var.routing_tag, var.canary_tag]
}

job "cabify" {
  # A block label cannot be an expression in HCL2: `id` (read by Nomad's parser when set, the
  # label otherwise) makes each branch its own job, so deploying one never replaces another.
  id          = local.name
  name        = local.name
  datacenters = var.datacenters
  type        = "service"

  # A new version: one canary first (it gets canary_share through haproxy-sync), then one instance at
  # a time (max_parallel 1: count - 1 keep serving), each healthy in Consul for min_healthy_time
  # (10s, two check intervals) within healthy_deadline (2m: pull and start); progress_deadline 5m
  # bounds the whole rollout, and auto_revert goes back to the last stable version when it fails.
  update {
    max_parallel      = 1
    canary            = 1
    auto_promote      = var.auto_promote
    auto_revert       = true
    health_check      = "checks"
    min_healthy_time  = "10s"
    healthy_deadline  = "2m"
    progress_deadline = "5m"
    stagger           = "10s"
  }

  group "cabify" {
    count = var.count

    # When a Nomad client is drained (site.yml drains each client before restarting it), its cabify
    # instances move one at a time: max_parallel 1 keeps count - 1 serving throughout (Nomad's
    # default, stated); each replacement must pass its Consul check, what haproxy-sync routes by
    # (health_check "checks"), for min_healthy_time 10s, two check intervals of 5s, so one passing
    # check right after start is not enough; healthy_deadline 2m, as for an update: an image pull
    # and a start, after which the replacement counts as unhealthy and the drain goes on.
    migrate {
      max_parallel     = 1
      health_check     = "checks"
      min_healthy_time = "10s"
      healthy_deadline = "2m"
    }

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
      name = local.name
      port = "http"
      tags = local.tags
      # Until promoted, the canary gets canary_share of the requests (haproxy-sync, docs/canary.md).
      canary_tags = local.canary_tags

      # What haproxy-sync routes by, for the services that carry the routing tag.
      meta {
        version                   = var.version
        branch                    = var.branch
        haproxy-sync-host         = local.host
        haproxy-sync-health-path  = "/health"
        haproxy-sync-canary-tag   = var.canary_tag
        haproxy-sync-canary-share = var.canary_share
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
