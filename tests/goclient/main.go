// Command goclient drives a Consul HTTP API (devconsul, or a real agent) with the official Go client,
// github.com/hashicorp/consul/api, and checks each answer against what Consul documents and does.
//
// Every check is written from Consul's documentation (developer.hashicorp.com/consul/api-docs) and,
// where the docs leave the exact semantics open, from Consul's own server code (hashicorp/consul,
// cited by path and function above each check). They are not written from devconsul.
//
// Usage: goclient -addr 127.0.0.1:8500 [-token SECRET] [-list] [-run REGEXP]
//
// The HTTP checks probe a server this program opens on 127.0.0.1, so the agent must run on the same
// host. Every check registers its own services (named gc-<check name>), so they do not interfere.
//
// Output: one JSON line per check on stdout, {"name": ..., "ok": true|false, "detail": ...}, then
// {"end": true, "count": N}. The exit status is 0 when the program ran to the end, failed checks
// included; it is non-zero only when it could not run (bad flags, the agent unreachable).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// env is what every check gets: clients and facts about the agent learnt at start-up.
type env struct {
	c        *api.Client // with -token (or none)
	anon     *api.Client // no token at all (the anonymous token when ACLs are on)
	bad      *api.Client // a token that does not exist
	token    string
	node     string // the agent's node name
	nodeAddr string // the agent's node address, from the catalog
	dc       string
	httpBase string // a local HTTP server the HTTP checks probe
}

type check struct {
	name string
	acl  bool // runs only when -token is given
	run  func(e *env, n string) (string, error)
}

type result struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

const checkTimeout = 45 * time.Second

// ---- helpers -------------------------------------------------------------------------------------

// svcName is the service name a check registers under: unique per check, DNS-safe.
func svcName(check string) string { return "gc-" + strings.ReplaceAll(check, "_", "-") }

// eventually retries f until it returns nil or d has passed. A Consul agent syncs its local state
// to the catalog asynchronously (anti-entropy, agent/local/state.go SyncChanges), so a catalog or
// health read right after an agent write may briefly miss it: checks wait for it, bounded.
func eventually(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func statusCode(err error) int {
	var se api.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func wantStatus(err error, code int, bodyPart string) error {
	if err == nil {
		return fmt.Errorf("no error; want HTTP %d", code)
	}
	var se api.StatusError
	if !errors.As(err, &se) {
		return fmt.Errorf("error %q is not an HTTP status; want HTTP %d", err, code)
	}
	if se.Code != code {
		return fmt.Errorf("HTTP %d (%s); want HTTP %d", se.Code, se.Body, code)
	}
	if bodyPart != "" && !strings.Contains(se.Body, bodyPart) {
		return fmt.Errorf("HTTP %d body %q lacks %q", se.Code, se.Body, bodyPart)
	}
	return nil
}

// after runs f once delay has passed, in the background; its error arrives on the channel.
func after(delay time.Duration, f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() {
		time.Sleep(delay)
		ch <- f()
	}()
	return ch
}

func register(e *env, r *api.AgentServiceRegistration) error {
	if err := e.c.Agent().ServiceRegister(r); err != nil {
		return fmt.Errorf("register %s: %w", r.Name, err)
	}
	return nil
}

func ttlCheck(id, status string) *api.AgentServiceCheck {
	return &api.AgentServiceCheck{CheckID: id, Name: id, TTL: "60s", Status: status}
}

// health waits until /v1/health/service/<name> (passing only or not) has want entries.
func health(e *env, name string, passing bool, want int) ([]*api.ServiceEntry, uint64, error) {
	var entries []*api.ServiceEntry
	var index uint64
	err := eventually(5*time.Second, func() error {
		got, qm, err := e.c.Health().Service(name, "", passing, nil)
		if err != nil {
			return err
		}
		entries, index = got, qm.LastIndex
		if len(got) != want {
			return fmt.Errorf("health/service/%s?passing=%v has %d entries, want %d", name, passing, len(got), want)
		}
		return nil
	})
	return entries, index, err
}

func entryIDs(entries []*api.ServiceEntry) []string {
	ids := make([]string, 0, len(entries))
	for _, entry := range entries {
		ids = append(ids, entry.Service.ID)
	}
	sort.Strings(ids)
	return ids
}

func sameIDs(entries []*api.ServiceEntry, want ...string) error {
	got := entryIDs(entries)
	sort.Strings(want)
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("entries %v, want %v", got, want)
	}
	return nil
}

// checkIn waits until the catalog's health check checkID of service name has the given status
// (and output, unless output is "-"); it returns the check.
func checkIn(e *env, name, checkID, status, output string) (*api.HealthCheck, error) {
	var found *api.HealthCheck
	err := eventually(5*time.Second, func() error {
		checks, _, err := e.c.Health().Checks(name, nil)
		if err != nil {
			return err
		}
		for _, c := range checks {
			if c.CheckID == checkID {
				found = c
				if c.Status != status || (output != "-" && c.Output != output) {
					return fmt.Errorf("check %s is %s with output %q, want %s with output %q",
						checkID, c.Status, c.Output, status, output)
				}
				return nil
			}
		}
		return fmt.Errorf("check %s not in health/checks/%s", checkID, name)
	})
	return found, err
}

func agentCheck(e *env, id string) (*api.AgentCheck, error) {
	checks, err := e.c.Agent().Checks()
	if err != nil {
		return nil, err
	}
	c, ok := checks[id]
	if !ok {
		return nil, fmt.Errorf("agent/checks has no %s", id)
	}
	return c, nil
}

type blocked struct {
	entries []*api.ServiceEntry
	index   uint64
	elapsed time.Duration
}

func blockHealth(e *env, name string, index uint64, wait time.Duration) (blocked, error) {
	start := time.Now()
	entries, qm, err := e.c.Health().Service(name, "", false, &api.QueryOptions{WaitIndex: index, WaitTime: wait})
	if err != nil {
		return blocked{}, err
	}
	return blocked{entries, qm.LastIndex, time.Since(start)}, nil
}

// heldFor: a blocking query that nothing relevant changed must be held about its wait time (Consul
// adds up to wait/16 of jitter, agent/blockingquery and lib.RandomStagger) and keep its index.
func heldFor(b blocked, index uint64, wait time.Duration) error {
	if b.elapsed < wait-100*time.Millisecond {
		return fmt.Errorf("returned after %v (index %d, waited on %d); want held about %v", b.elapsed.Round(time.Millisecond), b.index, index, wait)
	}
	if b.index != index {
		return fmt.Errorf("index moved %d -> %d though nothing the query depends on changed", index, b.index)
	}
	return nil
}

func kvKey(n, rest string) string { return strings.TrimPrefix(n, "gc-") + "/" + rest }

// ---- the checks ----------------------------------------------------------------------------------

var checks = []check{
	// /v1/agent/self: api-docs/agent#read-configuration returns "Config" (Datacenter, NodeName, ...)
	// and "Member", the agent's own serf member, whose Name is the node name.
	{name: "agent_self_config", run: func(e *env, n string) (string, error) {
		self, err := e.c.Agent().Self()
		if err != nil {
			return "", err
		}
		cfg, member := self["Config"], self["Member"]
		if cfg == nil || member == nil {
			return "", fmt.Errorf("agent/self lacks Config or Member: keys %v", keys(self))
		}
		if cfg["NodeName"] != e.node || cfg["Datacenter"] == "" || cfg["Datacenter"] == nil {
			return "", fmt.Errorf("Config NodeName=%v Datacenter=%v", cfg["NodeName"], cfg["Datacenter"])
		}
		if member["Name"] != e.node {
			return "", fmt.Errorf("Member.Name=%v, want the node name %q", member["Name"], e.node)
		}
		return fmt.Sprintf("node %s in %v", e.node, cfg["Datacenter"]), nil
	}},

	// /v1/status/leader and /v1/status/peers: api-docs/status. The leader is "host:port" of a raft
	// peer; a dev agent is its own leader, so the leader is one of the peers.
	{name: "status_leader_in_peers", run: func(e *env, n string) (string, error) {
		leader, err := e.c.Status().Leader()
		if err != nil {
			return "", err
		}
		if _, _, err := net.SplitHostPort(leader); err != nil {
			return "", fmt.Errorf("leader %q is not host:port: %v", leader, err)
		}
		peers, err := e.c.Status().Peers()
		if err != nil {
			return "", err
		}
		for _, p := range peers {
			if p == leader {
				return leader, nil
			}
		}
		return "", fmt.Errorf("leader %q not among peers %v", leader, peers)
	}},

	// /v1/catalog/datacenters: api-docs/catalog#list-datacenters lists every known datacenter,
	// the agent's own included.
	{name: "catalog_datacenters", run: func(e *env, n string) (string, error) {
		dcs, err := e.c.Catalog().Datacenters()
		if err != nil {
			return "", err
		}
		for _, dc := range dcs {
			if dc == e.dc {
				return strings.Join(dcs, ","), nil
			}
		}
		return "", fmt.Errorf("datacenters %v lack the agent's %q", dcs, e.dc)
	}},

	// A server registers the "consul" service for each server member (agent/consul/leader.go
	// handleAliveMember: "Register consul service if a server"), so a dev agent's catalog lists it.
	{name: "catalog_services_has_consul", run: func(e *env, n string) (string, error) {
		services, qm, err := e.c.Catalog().Services(nil)
		if err != nil {
			return "", err
		}
		if _, ok := services["consul"]; !ok {
			return "", fmt.Errorf("catalog/services has no consul: %v", keys(services))
		}
		return fmt.Sprintf("%d services, index %d", len(services), qm.LastIndex), nil
	}},

	// ---- registrations ----

	// api-docs/agent/service#register-service: "ID ... If not provided, this is set to Name"
	// (agent/agent.go validateService: service.ID = service.Service).
	{name: "register_id_defaults_to_name", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{Name: n, Port: 1}); err != nil {
			return "", err
		}
		services, err := e.c.Agent().Services()
		if err != nil {
			return "", err
		}
		s, ok := services[n]
		if !ok || s.ID != n || s.Service != n {
			return "", fmt.Errorf("agent/services[%s] = %+v", n, s)
		}
		return "ID " + s.ID, nil
	}},

	// api-docs/agent/service#get-service-configuration: /v1/agent/service/<id> answers what was
	// registered (ID, Service, Tags, Meta, Port, Address) and the agent's Datacenter.
	{name: "register_agent_service_roundtrip", run: func(e *env, n string) (string, error) {
		r := &api.AgentServiceRegistration{ID: n + "-1", Name: n, Tags: []string{"a", "b"}, Port: 8080,
			Address: "10.0.0.5", Meta: map[string]string{"k": "v"}}
		if err := register(e, r); err != nil {
			return "", err
		}
		s, _, err := e.c.Agent().Service(r.ID, nil)
		if err != nil {
			return "", err
		}
		if s.ID != r.ID || s.Service != n || !reflect.DeepEqual(s.Tags, r.Tags) || s.Port != 8080 ||
			s.Address != "10.0.0.5" || s.Meta["k"] != "v" || s.Datacenter != e.dc {
			return "", fmt.Errorf("agent/service/%s = %+v", r.ID, s)
		}
		return "fields as registered", nil
	}},

	// agent/agent.go validateService: "Set default weights if not specified" to {Passing: 1,
	// Warning: 1}; api-docs/agent/service#weights documents the same default.
	{name: "register_weights_default", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1}); err != nil {
			return "", err
		}
		entries, _, err := health(e, n, false, 1)
		if err != nil {
			return "", err
		}
		if w := entries[0].Service.Weights; w.Passing != 1 || w.Warning != 1 {
			return "", fmt.Errorf("health Service.Weights = %+v, want {1 1}", w)
		}
		return "{Passing:1 Warning:1}", nil
	}},

	// api-docs/agent/service#weights: given weights are kept; the catalog shows them as ServiceWeights
	// (api-docs/catalog#list-nodes-for-service).
	{name: "register_weights_given", run: func(e *env, n string) (string, error) {
		r := &api.AgentServiceRegistration{ID: n, Name: n, Port: 1, Weights: &api.AgentWeights{Passing: 10, Warning: 3}}
		if err := register(e, r); err != nil {
			return "", err
		}
		var got api.Weights
		err := eventually(5*time.Second, func() error {
			cs, _, err := e.c.Catalog().Service(n, "", nil)
			if err != nil {
				return err
			}
			if len(cs) != 1 {
				return fmt.Errorf("catalog/service/%s has %d entries", n, len(cs))
			}
			got = cs[0].ServiceWeights
			if got.Passing != 10 || got.Warning != 3 {
				return fmt.Errorf("ServiceWeights = %+v, want {10 3}", got)
			}
			return nil
		})
		return fmt.Sprintf("%+v", got), err
	}},

	// api-docs/catalog#list-nodes-for-service: each entry names the Node and its Address, the
	// Datacenter, and ServiceID, ServiceName, ServiceTags, ServiceMeta, ServicePort, ServiceAddress.
	{name: "register_catalog_service_fields", run: func(e *env, n string) (string, error) {
		r := &api.AgentServiceRegistration{ID: n + "-1", Name: n, Tags: []string{"t1"}, Port: 9090,
			Address: "10.0.0.9", Meta: map[string]string{"m": "1"}}
		if err := register(e, r); err != nil {
			return "", err
		}
		var cs []*api.CatalogService
		err := eventually(5*time.Second, func() error {
			var err error
			cs, _, err = e.c.Catalog().Service(n, "", nil)
			if err == nil && len(cs) != 1 {
				err = fmt.Errorf("catalog/service/%s has %d entries", n, len(cs))
			}
			return err
		})
		if err != nil {
			return "", err
		}
		s := cs[0]
		if s.Node != e.node || s.Address != e.nodeAddr || s.Datacenter != e.dc || s.ServiceID != r.ID ||
			s.ServiceName != n || !reflect.DeepEqual(s.ServiceTags, r.Tags) || s.ServiceMeta["m"] != "1" ||
			s.ServicePort != 9090 || s.ServiceAddress != "10.0.0.9" {
			return "", fmt.Errorf("catalog entry %+v", s)
		}
		return "node " + s.Node + " " + s.Address, nil
	}},

	// agent/catalog_endpoint.go CatalogServiceNodes: "Use empty list instead of nil" for the answer
	// and for each ServiceTags, so a service nobody registered is [] and a tagless one has [].
	{name: "catalog_service_empty_lists", run: func(e *env, n string) (string, error) {
		none, _, err := e.c.Catalog().Service(n+"-never", "", nil)
		if err != nil {
			return "", err
		}
		if none == nil || len(none) != 0 {
			return "", fmt.Errorf("catalog/service of an unknown name decoded to %#v, want []", none)
		}
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1}); err != nil {
			return "", err
		}
		return "[] and ServiceTags []", eventually(5*time.Second, func() error {
			cs, _, err := e.c.Catalog().Service(n, "", nil)
			if err != nil {
				return err
			}
			if len(cs) != 1 {
				return fmt.Errorf("catalog/service/%s has %d entries", n, len(cs))
			}
			if cs[0].ServiceTags == nil {
				return errors.New("ServiceTags is null, want []")
			}
			return nil
		})
	}},

	// agent/health_endpoint.go HealthServiceNodes: "Use empty list instead of nil" for the answer and
	// for each Service.Tags, so a service nobody registered is [] and a tagless one has Tags [].
	{name: "health_service_empty_lists", run: func(e *env, n string) (string, error) {
		none, _, err := e.c.Health().Service(n+"-never", "", false, nil)
		if err != nil {
			return "", err
		}
		if none == nil || len(none) != 0 {
			return "", fmt.Errorf("health/service of an unknown name decoded to %#v, want []", none)
		}
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1}); err != nil {
			return "", err
		}
		entries, _, err := health(e, n, false, 1)
		if err != nil {
			return "", err
		}
		if entries[0].Service.Tags == nil {
			return "", errors.New("Service.Tags is null, want []")
		}
		return "[] and Service.Tags []", nil
	}},

	// api-docs/agent/service#address: "If not provided, the agent's address is used as the address
	// for the service during DNS queries": the API keeps ServiceAddress/Service.Address empty and
	// the client falls back to the node's Address (api-docs/catalog#list-nodes-for-service).
	{name: "register_address_empty_uses_node_address", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 7000}); err != nil {
			return "", err
		}
		entries, _, err := health(e, n, false, 1)
		if err != nil {
			return "", err
		}
		if entries[0].Service.Address != "" || entries[0].Node.Address != e.nodeAddr || e.nodeAddr == "" {
			return "", fmt.Errorf("health Service.Address=%q Node.Address=%q (node %q)",
				entries[0].Service.Address, entries[0].Node.Address, e.nodeAddr)
		}
		cs, _, err := e.c.Catalog().Service(n, "", nil)
		if err != nil {
			return "", err
		}
		if len(cs) != 1 || cs[0].ServiceAddress != "" || cs[0].Address != e.nodeAddr {
			return "", fmt.Errorf("catalog entries %+v", cs)
		}
		return "ServiceAddress empty, node Address " + e.nodeAddr, nil
	}},

	// api-docs/agent/service#taggedaddresses: given tagged addresses come back as given
	// (catalog ServiceTaggedAddresses). No Address given, so no lan_ipv4/wan_ipv4 defaults are added.
	{name: "register_tagged_addresses_given", run: func(e *env, n string) (string, error) {
		want := map[string]api.ServiceAddress{"lan": {Address: "10.0.0.7", Port: 80}, "wan": {Address: "198.51.100.7", Port: 8080}}
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 80, TaggedAddresses: want}); err != nil {
			return "", err
		}
		return fmt.Sprint(want), eventually(5*time.Second, func() error {
			cs, _, err := e.c.Catalog().Service(n, "", nil)
			if err != nil {
				return err
			}
			if len(cs) != 1 || !reflect.DeepEqual(cs[0].ServiceTaggedAddresses, want) {
				return fmt.Errorf("catalog entries %v", describeTagged(cs))
			}
			return nil
		})
	}},

	// agent/agent.go addServiceInternal, "Set default tagged addresses": a service whose Address is
	// an IPv4 address gets lan_ipv4 and wan_ipv4 = {Address, Port} unless already given.
	{name: "register_tagged_addresses_default_ipv4", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 8080, Address: "10.1.2.3"}); err != nil {
			return "", err
		}
		want := api.ServiceAddress{Address: "10.1.2.3", Port: 8080}
		return "lan_ipv4 and wan_ipv4 " + fmt.Sprint(want), eventually(5*time.Second, func() error {
			cs, _, err := e.c.Catalog().Service(n, "", nil)
			if err != nil {
				return err
			}
			if len(cs) != 1 || cs[0].ServiceTaggedAddresses["lan_ipv4"] != want || cs[0].ServiceTaggedAddresses["wan_ipv4"] != want {
				return fmt.Errorf("catalog ServiceTaggedAddresses %v, want lan_ipv4 and wan_ipv4 = %v", describeTagged(cs), want)
			}
			return nil
		})
	}},

	// api-docs/health#list-service-instances-for-service: Service is the NodeService, Meta included,
	// keys with dashes kept as they are.
	{name: "health_service_meta", run: func(e *env, n string) (string, error) {
		meta := map[string]string{"x-y": "z", "version": "1.2"}
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1, Meta: meta}); err != nil {
			return "", err
		}
		entries, _, err := health(e, n, false, 1)
		if err != nil {
			return "", err
		}
		if !reflect.DeepEqual(entries[0].Service.Meta, meta) {
			return "", fmt.Errorf("Service.Meta = %v, want %v", entries[0].Service.Meta, meta)
		}
		return fmt.Sprint(meta), nil
	}},

	// api-docs/catalog#list-services: "a list of all known services with their tags": the tags of
	// all instances of a name, each once (state/catalog.go ServicesTxn builds a set; order is not
	// specified, so it is compared as a set).
	{name: "catalog_services_tags_union", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n + "-1", Name: n, Port: 1, Tags: []string{"a", "b"}}); err != nil {
			return "", err
		}
		if err := register(e, &api.AgentServiceRegistration{ID: n + "-2", Name: n, Port: 2, Tags: []string{"b", "c"}}); err != nil {
			return "", err
		}
		var tags []string
		return "tags a,b,c", eventually(5*time.Second, func() error {
			services, _, err := e.c.Catalog().Services(nil)
			if err != nil {
				return err
			}
			tags = append([]string(nil), services[n]...)
			sort.Strings(tags)
			if !reflect.DeepEqual(tags, []string{"a", "b", "c"}) {
				return fmt.Errorf("catalog/services[%s] = %v, want {a b c}", n, services[n])
			}
			return nil
		})
	}},

	// api-docs/agent/service#deregister-service: the service and its checks leave the agent and,
	// after the sync, the catalog.
	{name: "deregister_removes_service_and_checks", run: func(e *env, n string) (string, error) {
		r := &api.AgentServiceRegistration{ID: n, Name: n, Port: 1, Check: ttlCheck(n+"-ttl", "passing")}
		if err := register(e, r); err != nil {
			return "", err
		}
		if _, _, err := health(e, n, false, 1); err != nil {
			return "", err
		}
		if err := e.c.Agent().ServiceDeregister(n); err != nil {
			return "", err
		}
		services, err := e.c.Agent().Services()
		if err != nil {
			return "", err
		}
		if _, ok := services[n]; ok {
			return "", errors.New("still in agent/services")
		}
		if _, err := agentCheck(e, n+"-ttl"); err == nil {
			return "", errors.New("its check is still in agent/checks")
		}
		if _, _, err := health(e, n, false, 0); err != nil {
			return "", err
		}
		return "gone from agent and catalog", eventually(5*time.Second, func() error {
			checks, _, err := e.c.Health().Checks(n, nil)
			if err == nil && len(checks) != 0 {
				err = fmt.Errorf("health/checks/%s still has %d checks", n, len(checks))
			}
			return err
		})
	}},

	// agent/agent_endpoint.go AgentDeregisterService -> vetServiceUpdateWithAuthorizer: an unknown
	// ID is HTTPError 404 "Unknown service ID ... Ensure that the service ID is passed, not the service name."
	{name: "deregister_unknown_service_404", run: func(e *env, n string) (string, error) {
		err := e.c.Agent().ServiceDeregister(n + "-never-registered")
		return "404", wantStatus(err, 404, "Unknown service ID")
	}},

	// api-docs/health#tag: ?tag= keeps only the instances that have the tag.
	{name: "health_tag_filter", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n + "-blue", Name: n, Port: 1, Tags: []string{"blue"}}); err != nil {
			return "", err
		}
		if err := register(e, &api.AgentServiceRegistration{ID: n + "-green", Name: n, Port: 2, Tags: []string{"green"}}); err != nil {
			return "", err
		}
		if _, _, err := health(e, n, false, 2); err != nil {
			return "", err
		}
		entries, _, err := e.c.Health().Service(n, "blue", false, nil)
		if err != nil {
			return "", err
		}
		return "only the blue one", sameIDs(entries, n+"-blue")
	}},

	// ---- checks ----

	// agent/agent.go addServiceInternal: a service check without CheckID is "service:<service id>",
	// without Name "Service '<name>' check"; api-docs/agent/check: Type is "ttl" for a TTL check.
	{name: "ttl_check_default_id_and_name", run: func(e *env, n string) (string, error) {
		r := &api.AgentServiceRegistration{ID: n + "-1", Name: n, Port: 1, Check: &api.AgentServiceCheck{TTL: "60s"}}
		if err := register(e, r); err != nil {
			return "", err
		}
		id := "service:" + r.ID
		c, err := agentCheck(e, id)
		if err != nil {
			return "", err
		}
		if c.Name != "Service '"+n+"' check" || c.ServiceID != r.ID || c.ServiceName != n || c.Type != "ttl" {
			return "", fmt.Errorf("check %+v", c)
		}
		return id + " \"" + c.Name + "\"", nil
	}},

	// agent/agent.go addServiceInternal: with several checks, the default IDs are
	// "service:<id>:1", "service:<id>:2", ... in order.
	{name: "ttl_checks_multiple_default_ids", run: func(e *env, n string) (string, error) {
		r := &api.AgentServiceRegistration{ID: n, Name: n, Port: 1,
			Checks: api.AgentServiceChecks{{TTL: "60s"}, {TTL: "60s"}}}
		if err := register(e, r); err != nil {
			return "", err
		}
		for _, id := range []string{"service:" + n + ":1", "service:" + n + ":2"} {
			if _, err := agentCheck(e, id); err != nil {
				return "", err
			}
		}
		return "service:<id>:1 and :2", nil
	}},

	// agent/agent.go addServiceInternal: a check starts as api.HealthCritical unless Status is given
	// (api-docs/agent/check#status: "Specifies the initial status of the health check").
	{name: "ttl_check_starts_critical", run: func(e *env, n string) (string, error) {
		r := &api.AgentServiceRegistration{ID: n, Name: n, Port: 1, Check: &api.AgentServiceCheck{CheckID: n + "-ttl", TTL: "60s"}}
		if err := register(e, r); err != nil {
			return "", err
		}
		_, err := checkIn(e, n, n+"-ttl", "critical", "-")
		return "critical", err
	}},

	// api-docs/agent/check#status: the initial Status given is the check's status.
	{name: "ttl_check_initial_status", run: func(e *env, n string) (string, error) {
		r := &api.AgentServiceRegistration{ID: n, Name: n, Port: 1,
			Checks: api.AgentServiceChecks{ttlCheck(n+"-p", "passing"), ttlCheck(n+"-w", "warning")}}
		if err := register(e, r); err != nil {
			return "", err
		}
		if _, err := checkIn(e, n, n+"-p", "passing", "-"); err != nil {
			return "", err
		}
		_, err := checkIn(e, n, n+"-w", "warning", "-")
		return "passing and warning", err
	}},

	// api-docs/agent/check#ttl-check-pass: "note: Specifies a human-readable message. This will be
	// passed through to the check's Output field."
	{name: "ttl_pass_note_is_output", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1, Check: ttlCheck(n+"-ttl", "")}); err != nil {
			return "", err
		}
		if err := e.c.Agent().PassTTL(n+"-ttl", "all good"); err != nil {
			return "", err
		}
		_, err := checkIn(e, n, n+"-ttl", "passing", "all good")
		return "passing \"all good\"", err
	}},

	// api-docs/agent/check#ttl-check-warn and #ttl-check-fail: warning, then critical, note as Output.
	{name: "ttl_warn_and_fail", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1, Check: ttlCheck(n+"-ttl", "passing")}); err != nil {
			return "", err
		}
		if err := e.c.Agent().WarnTTL(n+"-ttl", "slow"); err != nil {
			return "", err
		}
		if _, err := checkIn(e, n, n+"-ttl", "warning", "slow"); err != nil {
			return "", err
		}
		if err := e.c.Agent().FailTTL(n+"-ttl", "down"); err != nil {
			return "", err
		}
		_, err := checkIn(e, n, n+"-ttl", "critical", "down")
		return "warning then critical", err
	}},

	// api-docs/agent/check#ttl-check-update: PUT /v1/agent/check/update/<id> {Status, Output} sets both.
	{name: "ttl_update_status_and_output", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1, Check: ttlCheck(n+"-ttl", "")}); err != nil {
			return "", err
		}
		if err := e.c.Agent().UpdateTTL(n+"-ttl", "out-1", api.HealthWarning); err != nil {
			return "", err
		}
		c, err := agentCheck(e, n+"-ttl")
		if err != nil {
			return "", err
		}
		if c.Status != "warning" || c.Output != "out-1" {
			return "", fmt.Errorf("agent/checks: %s %q", c.Status, c.Output)
		}
		_, err = checkIn(e, n, n+"-ttl", "warning", "out-1")
		return "warning \"out-1\"", err
	}},

	// api-docs/agent/check#ttl: "If the TTL expires without an update, the check is marked critical";
	// agent/checks/check.go CheckTTL.getExpiredOutput: "TTL expired (last output before timeout
	// follows): <last output>".
	{name: "ttl_expires_to_critical", run: func(e *env, n string) (string, error) {
		chk := &api.AgentServiceCheck{CheckID: n + "-ttl", TTL: "1s"}
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1, Check: chk}); err != nil {
			return "", err
		}
		if err := e.c.Agent().PassTTL(n+"-ttl", "alive"); err != nil {
			return "", err
		}
		want := "TTL expired (last output before timeout follows): alive"
		err := eventually(8*time.Second, func() error {
			_, err := checkIn(e, n, n+"-ttl", "critical", want)
			return err
		})
		return fmt.Sprintf("critical %q", want), err
	}},

	// agent/agent.go addServiceInternal, "Restore the fields from the snapshot": registering a service
	// again keeps the Status and Output its checks already had.
	{name: "ttl_reregister_keeps_status", run: func(e *env, n string) (string, error) {
		r := &api.AgentServiceRegistration{ID: n, Name: n, Port: 1, Check: ttlCheck(n+"-ttl", "")}
		if err := register(e, r); err != nil {
			return "", err
		}
		if err := e.c.Agent().PassTTL(n+"-ttl", "ok"); err != nil {
			return "", err
		}
		if _, err := checkIn(e, n, n+"-ttl", "passing", "ok"); err != nil {
			return "", err
		}
		r.Tags = []string{"again"}
		if err := register(e, r); err != nil {
			return "", err
		}
		c, err := agentCheck(e, n+"-ttl")
		if err != nil {
			return "", err
		}
		if c.Status != "passing" {
			return "", fmt.Errorf("after re-registration the check is %s", c.Status)
		}
		return "still passing", nil
	}},

	// agent/agent_endpoint.go agentCheckUpdate -> vetCheckUpdateWithAuthorizer: an unknown check ID
	// is HTTPError 404 "Unknown check ID ...", for update and for pass alike.
	{name: "ttl_unknown_check_404", run: func(e *env, n string) (string, error) {
		if err := wantStatus(e.c.Agent().UpdateTTL(n+"-never", "", api.HealthPassing), 404, ""); err != nil {
			return "", fmt.Errorf("check/update: %w", err)
		}
		if err := wantStatus(e.c.Agent().PassTTL(n+"-never", ""), 404, ""); err != nil {
			return "", fmt.Errorf("check/pass: %w", err)
		}
		return "404", nil
	}},

	// agent/agent.go updateTTLCheck: a check that exists but is not a TTL check is an error
	// "CheckID ... does not have associated TTL" (no status code given: HTTP 500).
	{name: "ttl_update_on_http_check_500", run: func(e *env, n string) (string, error) {
		chk := &api.AgentServiceCheck{CheckID: n + "-http", HTTP: e.httpBase + "/ok", Interval: "10s", Timeout: "1s"}
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1, Check: chk}); err != nil {
			return "", err
		}
		return "500", wantStatus(e.c.Agent().UpdateTTL(n+"-http", "", api.HealthPassing), 500, "does not have associated TTL")
	}},

	// agent/checks/check.go CheckHTTP.check: 2xx is passing; the Output is "HTTP GET <url>: <status>
	// Output: <body>"; api-docs/agent/check: Type "http".
	{name: "http_check_2xx_passing", run: func(e *env, n string) (string, error) {
		chk := &api.AgentServiceCheck{CheckID: n + "-http", HTTP: e.httpBase + "/ok", Interval: "1s", Timeout: "1s"}
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1, Check: chk}); err != nil {
			return "", err
		}
		var c *api.HealthCheck
		err := eventually(8*time.Second, func() error {
			var err error
			c, err = checkIn(e, n, n+"-http", "passing", "-")
			return err
		})
		if err != nil {
			return "", err
		}
		if c.Type != "http" || !strings.Contains(c.Output, "200 OK") {
			return "", fmt.Errorf("Type %q Output %q", c.Type, c.Output)
		}
		return c.Output, nil
	}},

	// agent/checks/check.go CheckHTTP.check: "429 Too Many Requests (RFC 6585)" is warning.
	{name: "http_check_429_warning", run: func(e *env, n string) (string, error) {
		chk := &api.AgentServiceCheck{CheckID: n + "-http", HTTP: e.httpBase + "/warn", Interval: "1s", Timeout: "1s"}
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1, Check: chk}); err != nil {
			return "", err
		}
		var c *api.HealthCheck
		err := eventually(8*time.Second, func() error {
			var err error
			c, err = checkIn(e, n, n+"-http", "warning", "-")
			return err
		})
		if err != nil {
			return "", err
		}
		return c.Output, nil
	}},

	// agent/checks/check.go CheckHTTP.check: any other status is critical, with the status in Output
	// (so the probe ran). The check starts passing: a new check is critical before its first run, and
	// from critical to critical only the output would change, which the agent syncs to the catalog only
	// after check_update_interval (agent/local/state.go UpdateCheck); passing to critical is synced at once.
	{name: "http_check_500_critical", run: func(e *env, n string) (string, error) {
		chk := &api.AgentServiceCheck{CheckID: n + "-http", HTTP: e.httpBase + "/fail", Interval: "1s", Timeout: "1s",
			Status: api.HealthPassing}
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1, Check: chk}); err != nil {
			return "", err
		}
		var c *api.HealthCheck
		err := eventually(8*time.Second, func() error {
			var err error
			c, err = checkIn(e, n, n+"-http", "critical", "-")
			if err == nil && !strings.Contains(c.Output, "500") {
				err = fmt.Errorf("Output %q does not show the 500", c.Output)
			}
			return err
		})
		if err != nil {
			return "", err
		}
		return c.Output, nil
	}},

	// api-docs/agent/check#register-check with ServiceID: the check belongs to the service and shows
	// in /v1/health/checks/<service> and in the service's health entries.
	{name: "check_register_for_service", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1}); err != nil {
			return "", err
		}
		reg := &api.AgentCheckRegistration{ID: n + "-extra", Name: "extra", ServiceID: n,
			AgentServiceCheck: api.AgentServiceCheck{TTL: "60s", Status: "passing"}}
		if err := e.c.Agent().CheckRegister(reg); err != nil {
			return "", err
		}
		c, err := checkIn(e, n, n+"-extra", "passing", "-")
		if err != nil {
			return "", err
		}
		if c.ServiceID != n || c.ServiceName != n {
			return "", fmt.Errorf("check ServiceID %q ServiceName %q", c.ServiceID, c.ServiceName)
		}
		entries, _, err := health(e, n, false, 1)
		if err != nil {
			return "", err
		}
		for _, hc := range entries[0].Checks {
			if hc.CheckID == n+"-extra" {
				return "in health/checks and the entry", nil
			}
		}
		return "", errors.New("the service's health entry lacks the check")
	}},

	// api-docs/health#list-checks-for-service: the checks of the service's instances (state
	// ServiceChecks selects by ServiceName); node checks such as serfHealth are not in it.
	{name: "health_checks_service_only", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1, Check: ttlCheck(n+"-ttl", "passing")}); err != nil {
			return "", err
		}
		if _, err := checkIn(e, n, n+"-ttl", "passing", "-"); err != nil {
			return "", err
		}
		checks, _, err := e.c.Health().Checks(n, nil)
		if err != nil {
			return "", err
		}
		for _, c := range checks {
			if c.ServiceName != n {
				return "", fmt.Errorf("health/checks/%s has %s of service %q", n, c.CheckID, c.ServiceName)
			}
		}
		return fmt.Sprintf("%d check(s)", len(checks)), nil
	}},

	// api-docs/health#list-checks-in-state: /v1/health/state/critical lists critical checks only.
	{name: "health_state_critical", run: func(e *env, n string) (string, error) {
		r := &api.AgentServiceRegistration{ID: n, Name: n, Port: 1,
			Checks: api.AgentServiceChecks{ttlCheck(n+"-crit", "critical"), ttlCheck(n+"-ok", "passing")}}
		if err := register(e, r); err != nil {
			return "", err
		}
		if _, err := checkIn(e, n, n+"-ok", "passing", "-"); err != nil {
			return "", err
		}
		checks, _, err := e.c.Health().State("critical", nil)
		if err != nil {
			return "", err
		}
		seen := map[string]bool{}
		for _, c := range checks {
			if c.Status != "critical" {
				return "", fmt.Errorf("health/state/critical has %s in %s", c.CheckID, c.Status)
			}
			seen[c.CheckID] = true
		}
		if !seen[n+"-crit"] || seen[n+"-ok"] {
			return "", fmt.Errorf("health/state/critical: critical one listed %v, passing one listed %v", seen[n+"-crit"], seen[n+"-ok"])
		}
		return "critical only", nil
	}},

	// api-docs/agent/service#enable-maintenance-mode: a critical check "_service_maintenance:<id>"
	// with the reason as Notes; disabling removes it.
	{name: "service_maintenance", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1}); err != nil {
			return "", err
		}
		if _, _, err := health(e, n, true, 1); err != nil {
			return "", err
		}
		if err := e.c.Agent().EnableServiceMaintenance(n, "gc reason"); err != nil {
			return "", err
		}
		c, err := checkIn(e, n, "_service_maintenance:"+n, "critical", "-")
		if err != nil {
			return "", err
		}
		if c.Notes != "gc reason" {
			return "", fmt.Errorf("Notes %q, want the reason", c.Notes)
		}
		if _, _, err := health(e, n, true, 0); err != nil {
			return "", err
		}
		if err := e.c.Agent().DisableServiceMaintenance(n); err != nil {
			return "", err
		}
		_, _, err = health(e, n, true, 1)
		return "critical while on, gone after", err
	}},

	// ---- health filtering ----

	// api-docs/health#passing: "only nodes with all checks in the passing state" (agent/health_endpoint.go
	// filterNonPassing drops an entry with any check not passing).
	{name: "passing_only_excludes_critical", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n + "-ok", Name: n, Port: 1, Check: ttlCheck(n+"-ok-ttl", "passing")}); err != nil {
			return "", err
		}
		if err := register(e, &api.AgentServiceRegistration{ID: n + "-bad", Name: n, Port: 2, Check: ttlCheck(n+"-bad-ttl", "critical")}); err != nil {
			return "", err
		}
		if _, _, err := health(e, n, false, 2); err != nil {
			return "", err
		}
		entries, _, err := health(e, n, true, 1)
		if err != nil {
			return "", err
		}
		return "only the passing one", sameIDs(entries, n+"-ok")
	}},

	// Same rule: warning is not passing.
	{name: "passing_only_excludes_warning", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n + "-ok", Name: n, Port: 1, Check: ttlCheck(n+"-ok-ttl", "passing")}); err != nil {
			return "", err
		}
		if err := register(e, &api.AgentServiceRegistration{ID: n + "-warn", Name: n, Port: 2, Check: ttlCheck(n+"-warn-ttl", "warning")}); err != nil {
			return "", err
		}
		if _, _, err := health(e, n, false, 2); err != nil {
			return "", err
		}
		entries, _, err := health(e, n, true, 1)
		if err != nil {
			return "", err
		}
		return "only the passing one", sameIDs(entries, n+"-ok")
	}},

	// Same rule: a service without checks has only the node's passing checks, so it is passing.
	{name: "passing_only_keeps_service_without_checks", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1}); err != nil {
			return "", err
		}
		_, _, err := health(e, n, true, 1)
		return "kept", err
	}},

	// api-docs/health#list-service-instances-for-service: Checks holds the node's checks too
	// (state parseCheckServiceNodes: node-level checks first), serfHealth on an agent's node.
	{name: "health_entry_includes_node_check", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1}); err != nil {
			return "", err
		}
		entries, _, err := health(e, n, false, 1)
		if err != nil {
			return "", err
		}
		for _, c := range entries[0].Checks {
			if c.CheckID == "serfHealth" && c.ServiceID == "" {
				return "serfHealth " + c.Status, nil
			}
		}
		return "", fmt.Errorf("entry checks %v lack serfHealth", checkIDs(entries[0].Checks))
	}},

	// ---- blocking queries ----

	// agent/consul/rpc.go SetQueryMeta: "Always set a non-zero QueryMeta.Index" (an index of 0 would
	// make a client's next query non-blocking), for empty answers too.
	{name: "index_never_zero", run: func(e *env, n string) (string, error) {
		indexes := map[string]uint64{}
		_, qm, err := e.c.Health().Service(n+"-never", "", false, nil)
		if err != nil {
			return "", err
		}
		indexes["health/service(unknown)"] = qm.LastIndex
		_, qm, err = e.c.Catalog().Service(n+"-never", "", nil)
		if err != nil {
			return "", err
		}
		indexes["catalog/service(unknown)"] = qm.LastIndex
		_, qm, err = e.c.Health().Checks(n+"-never", nil)
		if err != nil {
			return "", err
		}
		indexes["health/checks(unknown)"] = qm.LastIndex
		_, qm, err = e.c.Catalog().Services(nil)
		if err != nil {
			return "", err
		}
		indexes["catalog/services"] = qm.LastIndex
		_, qm, err = e.c.Catalog().Nodes(nil)
		if err != nil {
			return "", err
		}
		indexes["catalog/nodes"] = qm.LastIndex
		for what, index := range indexes {
			if index == 0 {
				return "", fmt.Errorf("%s answered X-Consul-Index 0", what)
			}
		}
		return fmt.Sprint(indexes), nil
	}},

	// api-docs/features/blocking: with ?index=, "the HTTP request will hang until a change in the
	// system occurs"; a new instance changes the answer, so it returns early with a higher index.
	{name: "blocking_returns_early_on_new_instance", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n + "-1", Name: n, Port: 1}); err != nil {
			return "", err
		}
		_, index, err := health(e, n, false, 1)
		if err != nil {
			return "", err
		}
		write := after(300*time.Millisecond, func() error {
			return register(e, &api.AgentServiceRegistration{ID: n + "-2", Name: n, Port: 2})
		})
		b, err := blockHealth(e, n, index, 10*time.Second)
		if werr := <-write; werr != nil {
			return "", werr
		}
		if err != nil {
			return "", err
		}
		if b.elapsed > 5*time.Second || len(b.entries) != 2 || b.index <= index {
			return "", fmt.Errorf("after %v: %d entries, index %d (waited on %d)", b.elapsed.Round(time.Millisecond), len(b.entries), b.index, index)
		}
		return fmt.Sprintf("after %v, index %d -> %d", b.elapsed.Round(time.Millisecond), index, b.index), nil
	}},

	// A check's status change is written at once (agent/local/state.go UpdateCheck: "If there is a
	// status change we do the write immediately") and wakes the service's health query.
	{name: "blocking_returns_on_check_status_change", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1, Check: ttlCheck(n+"-ttl", "passing")}); err != nil {
			return "", err
		}
		if _, err := checkIn(e, n, n+"-ttl", "passing", "-"); err != nil {
			return "", err
		}
		_, index, err := health(e, n, false, 1)
		if err != nil {
			return "", err
		}
		write := after(300*time.Millisecond, func() error { return e.c.Agent().FailTTL(n+"-ttl", "down") })
		b, err := blockHealth(e, n, index, 10*time.Second)
		if werr := <-write; werr != nil {
			return "", werr
		}
		if err != nil {
			return "", err
		}
		if b.elapsed > 5*time.Second || b.index <= index || len(b.entries) != 1 {
			return "", fmt.Errorf("after %v: index %d (waited on %d)", b.elapsed.Round(time.Millisecond), b.index, index)
		}
		for _, c := range b.entries[0].Checks {
			if c.CheckID == n+"-ttl" && c.Status == "critical" {
				return fmt.Sprintf("after %v", b.elapsed.Round(time.Millisecond)), nil
			}
		}
		return "", errors.New("woken, but the check is not critical in the answer")
	}},

	// state/catalog.go: deleting the last instance of a service sets the "service_last_extinction"
	// index, which the now empty answer reports, so the query returns and its index moves forward.
	{name: "blocking_returns_on_deregistration", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1}); err != nil {
			return "", err
		}
		_, index, err := health(e, n, false, 1)
		if err != nil {
			return "", err
		}
		write := after(300*time.Millisecond, func() error { return e.c.Agent().ServiceDeregister(n) })
		b, err := blockHealth(e, n, index, 10*time.Second)
		if werr := <-write; werr != nil {
			return "", werr
		}
		if err != nil {
			return "", err
		}
		if b.elapsed > 5*time.Second || len(b.entries) != 0 || b.index <= index {
			return "", fmt.Errorf("after %v: %d entries, index %d (waited on %d)", b.elapsed.Round(time.Millisecond), len(b.entries), b.index, index)
		}
		return fmt.Sprintf("after %v, index %d -> %d", b.elapsed.Round(time.Millisecond), index, b.index), nil
	}},

	// api-docs/features/blocking: "wait ... specifying a maximum duration for the blocking request";
	// agent/blockingquery: held until then (plus up to wait/16 jitter) when nothing changes, and the
	// answer keeps the index.
	{name: "blocking_wait_time_respected", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1}); err != nil {
			return "", err
		}
		_, index, err := health(e, n, false, 1)
		if err != nil {
			return "", err
		}
		wait := time.Second
		b, err := blockHealth(e, n, index, wait)
		if err != nil {
			return "", err
		}
		if err := heldFor(b, index, wait); err != nil {
			return "", err
		}
		if b.elapsed > wait+wait/16+2*time.Second {
			return "", fmt.Errorf("held %v for a wait of %v", b.elapsed.Round(time.Millisecond), wait)
		}
		return fmt.Sprintf("held %v for wait=1s", b.elapsed.Round(time.Millisecond)), nil
	}},

	// agent/local/state.go UpdateCheck: "Defer a sync if the output has changed ... If there is a
	// status change we do the write immediately": with check_update_interval (default 5m) an
	// output-only TTL update reaches the catalog only after 2.5-7.5 min, so it does not wake a
	// health query within a few seconds, and the catalog keeps the old output meanwhile.
	{name: "blocking_not_woken_by_output_only_ttl_update", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1, Check: ttlCheck(n+"-ttl", "")}); err != nil {
			return "", err
		}
		if err := e.c.Agent().UpdateTTL(n+"-ttl", "first", api.HealthPassing); err != nil {
			return "", err
		}
		if _, err := checkIn(e, n, n+"-ttl", "passing", "first"); err != nil {
			return "", err
		}
		_, index, err := health(e, n, false, 1)
		if err != nil {
			return "", err
		}
		wait := 2 * time.Second
		write := after(300*time.Millisecond, func() error { return e.c.Agent().UpdateTTL(n+"-ttl", "second", api.HealthPassing) })
		b, err := blockHealth(e, n, index, wait)
		if werr := <-write; werr != nil {
			return "", werr
		}
		if err != nil {
			return "", err
		}
		if err := heldFor(b, index, wait); err != nil {
			return "", err
		}
		for _, c := range b.entries[0].Checks {
			if c.CheckID == n+"-ttl" && c.Output != "first" {
				return "", fmt.Errorf("the catalog already has output %q", c.Output)
			}
		}
		return fmt.Sprintf("held %v, catalog output still \"first\"", b.elapsed.Round(time.Millisecond)), nil
	}},

	// The same deferral is of the sync only: the agent's own state takes the output at once
	// (agent/local/state.go UpdateCheck sets c.Check.Output before deferring), so /v1/agent/checks shows it.
	{name: "agent_checks_show_output_only_update_at_once", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1, Check: ttlCheck(n+"-ttl", "")}); err != nil {
			return "", err
		}
		if err := e.c.Agent().UpdateTTL(n+"-ttl", "first", api.HealthPassing); err != nil {
			return "", err
		}
		if err := e.c.Agent().UpdateTTL(n+"-ttl", "second", api.HealthPassing); err != nil {
			return "", err
		}
		c, err := agentCheck(e, n+"-ttl")
		if err != nil {
			return "", err
		}
		if c.Output != "second" || c.Status != "passing" {
			return "", fmt.Errorf("agent/checks: %s %q, want passing \"second\"", c.Status, c.Output)
		}
		return "passing \"second\"", nil
	}},

	// state/catalog.go maxIndexAndWatchChForService: for a service with no instances the answer's
	// index is the "service_last_extinction" index (set when the last instance of any service was
	// deregistered), which registrations of other services do not move: such a query is held
	// "until an instance for this service is available, or another service is unregistered".
	// (The extinction index exists here: this check deregisters a service first.)
	{name: "blocking_never_registered_not_woken_by_unrelated_write", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n + "-gone", Name: n + "-gone", Port: 1}); err != nil {
			return "", err
		}
		if _, _, err := health(e, n+"-gone", false, 1); err != nil {
			return "", err
		}
		if err := e.c.Agent().ServiceDeregister(n + "-gone"); err != nil {
			return "", err
		}
		if _, _, err := health(e, n+"-gone", false, 0); err != nil {
			return "", err
		}
		_, index, err := health(e, n+"-never", false, 0)
		if err != nil {
			return "", err
		}
		wait := 2 * time.Second
		write := after(300*time.Millisecond, func() error {
			return register(e, &api.AgentServiceRegistration{ID: n + "-other", Name: n + "-other", Port: 1})
		})
		b, err := blockHealth(e, n+"-never", index, wait)
		if werr := <-write; werr != nil {
			return "", werr
		}
		if err != nil {
			return "", err
		}
		if err := heldFor(b, index, wait); err != nil {
			return "", err
		}
		return fmt.Sprintf("held %v at index %d", b.elapsed.Round(time.Millisecond), index), nil
	}},

	// api-docs/catalog#list-services supports blocking; a new service name changes the answer.
	{name: "blocking_catalog_services_returns_on_new_service", run: func(e *env, n string) (string, error) {
		_, qm, err := e.c.Catalog().Services(nil)
		if err != nil {
			return "", err
		}
		index := qm.LastIndex
		write := after(300*time.Millisecond, func() error {
			return register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1})
		})
		start := time.Now()
		services, qm, err := e.c.Catalog().Services(&api.QueryOptions{WaitIndex: index, WaitTime: 10 * time.Second})
		elapsed := time.Since(start)
		if werr := <-write; werr != nil {
			return "", werr
		}
		if err != nil {
			return "", err
		}
		if !has(services, n) || elapsed > 5*time.Second || qm.LastIndex <= index {
			return "", fmt.Errorf("after %v: listed %v, index %d (waited on %d)", elapsed.Round(time.Millisecond), has(services, n), qm.LastIndex, index)
		}
		return fmt.Sprintf("after %v", elapsed.Round(time.Millisecond)), nil
	}},

	// state/catalog.go Services: the answer's index is the "services" table's; a check's status
	// change touches the checks table and the per-service index only (catalogUpdateServiceIndexes),
	// so /v1/catalog/services does not return for it.
	{name: "blocking_catalog_services_ignores_check_status", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1, Check: ttlCheck(n+"-ttl", "passing")}); err != nil {
			return "", err
		}
		if _, err := checkIn(e, n, n+"-ttl", "passing", "-"); err != nil {
			return "", err
		}
		_, qm, err := e.c.Catalog().Services(nil)
		if err != nil {
			return "", err
		}
		index := qm.LastIndex
		wait := 2 * time.Second
		write := after(300*time.Millisecond, func() error { return e.c.Agent().FailTTL(n+"-ttl", "down") })
		start := time.Now()
		_, qm, err = e.c.Catalog().Services(&api.QueryOptions{WaitIndex: index, WaitTime: wait})
		b := blocked{elapsed: time.Since(start)}
		if werr := <-write; werr != nil {
			return "", werr
		}
		if err != nil {
			return "", err
		}
		b.index = qm.LastIndex
		if err := heldFor(b, index, wait); err != nil {
			return "", err
		}
		return fmt.Sprintf("held %v", b.elapsed.Round(time.Millisecond)), nil
	}},

	// ---- filters (api-docs/features/filtering, go-bexpr) ----

	// api-docs/features/filtering: map keys that are not identifiers are selected as Meta["x-y"].
	{name: "filter_service_meta_dash_key", run: func(e *env, n string) (string, error) {
		if err := registerPair(e, n, map[string]string{"x-y": "z"}, map[string]string{"x-y": "w"}, "passing", "passing"); err != nil {
			return "", err
		}
		entries, _, err := e.c.Health().Service(n, "", false, &api.QueryOptions{Filter: `Service.Meta["x-y"] == "z"`})
		if err != nil {
			return "", err
		}
		return "only x-y=z", sameIDs(entries, n+"-a")
	}},

	// go-bexpr evaluate.go: "operations on slices are implicitly ANY operations". Checks.Status !=
	// "critical" holds when any check is not critical, and every entry has the node's passing
	// serfHealth, so an instance whose own check is critical still matches.
	{name: "filter_checks_status_not_critical_is_any", run: func(e *env, n string) (string, error) {
		if err := registerPair(e, n, nil, nil, "critical", "passing"); err != nil {
			return "", err
		}
		entries, _, err := e.c.Health().Service(n, "", false, &api.QueryOptions{Filter: `Checks.Status != "critical"`})
		if err != nil {
			return "", err
		}
		return "both entries (any check not critical)", sameIDs(entries, n+"-a", n+"-b")
	}},

	// Same ANY rule: Checks.Status == "critical" holds when any check is critical.
	{name: "filter_checks_status_equal_critical_is_any", run: func(e *env, n string) (string, error) {
		if err := registerPair(e, n, nil, nil, "critical", "passing"); err != nil {
			return "", err
		}
		entries, _, err := e.c.Health().Service(n, "", false, &api.QueryOptions{Filter: `Checks.Status == "critical"`})
		if err != nil {
			return "", err
		}
		return "only the critical one", sameIDs(entries, n+"-a")
	}},

	// agent/consul/health_endpoint.go ServiceNodes: bexpr.CreateFilter fails on a syntax error and
	// the request fails (an error from the client, not an unfiltered answer).
	{name: "filter_bad_syntax_error", run: func(e *env, n string) (string, error) {
		_, _, err := e.c.Health().Service("consul", "", false, &api.QueryOptions{Filter: `Service.Meta["x-y" ==`})
		if err == nil {
			return "", errors.New("no error for a malformed filter")
		}
		return err.Error(), nil
	}},

	// bexpr.CreateFilter validates selectors against the answer's type: an unknown field is an error.
	{name: "filter_unknown_selector_error", run: func(e *env, n string) (string, error) {
		_, _, err := e.c.Health().Service("consul", "", false, &api.QueryOptions{Filter: `Service.NoSuchField == "x"`})
		if err == nil {
			return "", errors.New("no error for an unknown selector")
		}
		return err.Error(), nil
	}},

	// api-docs/catalog#filtering-1: catalog/service/<name> filters on ServiceNode fields; "in" on a
	// list tests membership.
	{name: "filter_catalog_service_tags", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n + "-a", Name: n, Port: 1, Tags: []string{"blue"}}); err != nil {
			return "", err
		}
		if err := register(e, &api.AgentServiceRegistration{ID: n + "-b", Name: n, Port: 2, Tags: []string{"green"}}); err != nil {
			return "", err
		}
		if _, _, err := health(e, n, false, 2); err != nil {
			return "", err
		}
		cs, _, err := e.c.Catalog().Service(n, "", &api.QueryOptions{Filter: `"blue" in ServiceTags`})
		if err != nil {
			return "", err
		}
		if len(cs) != 1 || cs[0].ServiceID != n+"-a" {
			return "", fmt.Errorf("%d entries %v", len(cs), catalogIDs(cs))
		}
		return "only the blue one", nil
	}},

	// api-docs/agent/service#filtering: /v1/agent/services filters on AgentService fields.
	{name: "filter_agent_services_meta", run: func(e *env, n string) (string, error) {
		if err := registerPair(e, n, map[string]string{"x-y": "z"}, map[string]string{"x-y": "w"}, "passing", "passing"); err != nil {
			return "", err
		}
		services, err := e.c.Agent().ServicesWithFilter(`Meta["x-y"] == "z"`)
		if err != nil {
			return "", err
		}
		_, a := services[n+"-a"]
		_, b := services[n+"-b"]
		if !a || b {
			return "", fmt.Errorf("matched %v", keys(services))
		}
		return "only x-y=z", nil
	}},

	// ---- catalog node and catalog register ----

	// api-docs/catalog#list-services-for-node: the Node (name, Address) and its Services by ID.
	{name: "catalog_node_local", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1}); err != nil {
			return "", err
		}
		if _, _, err := health(e, n, false, 1); err != nil {
			return "", err
		}
		node, _, err := e.c.Catalog().Node(e.node, nil)
		if err != nil {
			return "", err
		}
		if node == nil || node.Node == nil || node.Node.Node != e.node || node.Node.Address != e.nodeAddr {
			return "", fmt.Errorf("catalog/node/%s = %+v", e.node, node)
		}
		if s, ok := node.Services[n]; !ok || s.Service != n {
			return "", fmt.Errorf("catalog/node/%s lacks service %s: %v", e.node, n, keys(node.Services))
		}
		return fmt.Sprintf("%d services", len(node.Services)), nil
	}},

	// agent/catalog_endpoint.go CatalogNodeServices returns out.NodeServices, nil for a node that does
	// not exist: 200 with null, which the client decodes to a nil node and no error.
	{name: "catalog_node_unknown_null", run: func(e *env, n string) (string, error) {
		node, qm, err := e.c.Catalog().Node(n+"-no-such-node", nil)
		if err != nil {
			return "", err
		}
		if node != nil {
			return "", fmt.Errorf("got %+v, want null", node)
		}
		return fmt.Sprintf("null, index %d", qm.LastIndex), nil
	}},

	// api-docs/catalog#register-entity: registers a node (an external one here), a service and a check
	// directly in the catalog; catalog/service then lists it on that node with that address.
	{name: "catalog_register_external_service", run: func(e *env, n string) (string, error) {
		if err := catalogRegister(e, n, "192.0.2.10"); err != nil {
			return "", err
		}
		return "on " + n + "-node", eventually(5*time.Second, func() error {
			cs, _, err := e.c.Catalog().Service(n, "", nil)
			if err != nil {
				return err
			}
			if len(cs) != 1 || cs[0].Node != n+"-node" || cs[0].Address != "192.0.2.10" || cs[0].ServiceID != n+"-1" ||
				cs[0].ServicePort != 9000 || cs[0].NodeMeta["rack"] != "r1" {
				return fmt.Errorf("catalog entries %v", describeCatalog(cs))
			}
			return nil
		})
	}},

	// An external node has exactly the checks registered for it (no agent, so no serfHealth): its
	// service's health entry carries the registered check.
	{name: "catalog_register_external_health", run: func(e *env, n string) (string, error) {
		if err := catalogRegister(e, n, "192.0.2.11"); err != nil {
			return "", err
		}
		entries, _, err := health(e, n, true, 1)
		if err != nil {
			return "", err
		}
		if ids := checkIDs(entries[0].Checks); !reflect.DeepEqual(ids, []string{n + "-check"}) || entries[0].Node.Node != n+"-node" {
			return "", fmt.Errorf("entry node %s checks %v", entries[0].Node.Node, ids)
		}
		return "passing, checks " + n + "-check", nil
	}},

	// api-docs/catalog#list-nodes: the external node is listed with its NodeMeta; ?node-meta= filters.
	{name: "catalog_nodes_include_external_with_meta", run: func(e *env, n string) (string, error) {
		if err := catalogRegister(e, n, "192.0.2.12"); err != nil {
			return "", err
		}
		nodes, _, err := e.c.Catalog().Nodes(&api.QueryOptions{NodeMeta: map[string]string{"rack": "r1", "gc": n}})
		if err != nil {
			return "", err
		}
		if len(nodes) != 1 || nodes[0].Node != n+"-node" || nodes[0].Address != "192.0.2.12" {
			return "", fmt.Errorf("catalog/nodes?node-meta: %v", nodeNames(nodes))
		}
		return "listed, node-meta filter works", nil
	}},

	// api-docs/catalog#deregister-entity: deregistering the node removes it with its services.
	{name: "catalog_deregister_external_node", run: func(e *env, n string) (string, error) {
		if err := catalogRegister(e, n, "192.0.2.13"); err != nil {
			return "", err
		}
		if _, err := e.c.Catalog().Deregister(&api.CatalogDeregistration{Node: n + "-node"}, nil); err != nil {
			return "", err
		}
		if _, _, err := health(e, n, false, 0); err != nil {
			return "", err
		}
		node, _, err := e.c.Catalog().Node(n+"-node", nil)
		if err != nil {
			return "", err
		}
		if node != nil {
			return "", fmt.Errorf("catalog/node still has %+v", node.Node)
		}
		return "node and service gone", nil
	}},

	// ---- KV (api-docs/kv) ----

	// api-docs/kv#create-update-key and #read-key: Value (base64 on the wire, bytes in the client),
	// Flags, CreateIndex/ModifyIndex; a single key's X-Consul-Index is its ModifyIndex
	// (agent/consul/kvs_endpoint.go Get: reply.Index = ent.ModifyIndex).
	{name: "kv_put_get", run: func(e *env, n string) (string, error) {
		key := kvKey(n, "k")
		if _, err := e.c.KV().Put(&api.KVPair{Key: key, Value: []byte("hello"), Flags: 42}, nil); err != nil {
			return "", err
		}
		p, qm, err := e.c.KV().Get(key, nil)
		if err != nil {
			return "", err
		}
		if p == nil || p.Key != key || string(p.Value) != "hello" || p.Flags != 42 || p.CreateIndex == 0 || p.ModifyIndex == 0 {
			return "", fmt.Errorf("got %+v", p)
		}
		if qm.LastIndex != p.ModifyIndex {
			return "", fmt.Errorf("X-Consul-Index %d, ModifyIndex %d", qm.LastIndex, p.ModifyIndex)
		}
		return fmt.Sprintf("hello flags 42 index %d", p.ModifyIndex), nil
	}},

	// api-docs/kv#read-key: a missing key is 404 (the client: nil pair, no error), with a non-zero
	// index (kvs_endpoint.go Get: "Must provide non-zero index to prevent blocking").
	{name: "kv_get_missing_nil", run: func(e *env, n string) (string, error) {
		p, qm, err := e.c.KV().Get(kvKey(n, "missing"), nil)
		if err != nil {
			return "", err
		}
		if p != nil || qm == nil || qm.LastIndex == 0 {
			return "", fmt.Errorf("pair %+v, meta %+v", p, qm)
		}
		return fmt.Sprintf("nil, index %d", qm.LastIndex), nil
	}},

	// api-docs/kv#recurse: every key under the prefix, in key order.
	{name: "kv_list_recurse_sorted", run: func(e *env, n string) (string, error) {
		for _, k := range []string{"b", "a", "c/d"} {
			if _, err := e.c.KV().Put(&api.KVPair{Key: kvKey(n, k), Value: []byte(k)}, nil); err != nil {
				return "", err
			}
		}
		pairs, _, err := e.c.KV().List(kvKey(n, ""), nil)
		if err != nil {
			return "", err
		}
		var got []string
		for _, p := range pairs {
			got = append(got, p.Key)
		}
		want := []string{kvKey(n, "a"), kvKey(n, "b"), kvKey(n, "c/d")}
		if !reflect.DeepEqual(got, want) {
			return "", fmt.Errorf("keys %v, want %v", got, want)
		}
		return strings.Join(got, ","), nil
	}},

	// api-docs/kv#keys and #separator: keys only, up to and including the separator.
	{name: "kv_keys_separator", run: func(e *env, n string) (string, error) {
		for _, k := range []string{"a", "b/c", "b/d"} {
			if _, err := e.c.KV().Put(&api.KVPair{Key: kvKey(n, k), Value: []byte(k)}, nil); err != nil {
				return "", err
			}
		}
		got, _, err := e.c.KV().Keys(kvKey(n, ""), "/", nil)
		if err != nil {
			return "", err
		}
		want := []string{kvKey(n, "a"), kvKey(n, "b/")}
		if !reflect.DeepEqual(got, want) {
			return "", fmt.Errorf("keys %v, want %v", got, want)
		}
		return strings.Join(got, ","), nil
	}},

	// api-docs/kv#cas: "the key is only set if the index matches the ModifyIndex of that key";
	// the answer is true or false.
	{name: "kv_cas", run: func(e *env, n string) (string, error) {
		key := kvKey(n, "k")
		if _, err := e.c.KV().Put(&api.KVPair{Key: key, Value: []byte("v1")}, nil); err != nil {
			return "", err
		}
		p, _, err := e.c.KV().Get(key, nil)
		if err != nil || p == nil {
			return "", fmt.Errorf("get: %v %v", p, err)
		}
		ok, _, err := e.c.KV().CAS(&api.KVPair{Key: key, Value: []byte("stale"), ModifyIndex: p.ModifyIndex + 1000}, nil)
		if err != nil || ok {
			return "", fmt.Errorf("CAS with a wrong index: %v %v", ok, err)
		}
		ok, _, err = e.c.KV().CAS(&api.KVPair{Key: key, Value: []byte("v2"), ModifyIndex: p.ModifyIndex}, nil)
		if err != nil || !ok {
			return "", fmt.Errorf("CAS with the right index: %v %v", ok, err)
		}
		q, _, err := e.c.KV().Get(key, nil)
		if err != nil || q == nil || string(q.Value) != "v2" || q.ModifyIndex <= p.ModifyIndex {
			return "", fmt.Errorf("after CAS: %+v %v", q, err)
		}
		return "wrong index false, right index true", nil
	}},

	// api-docs/kv#cas: "If the index is 0, Consul will only put the key if it does not already exist."
	{name: "kv_cas_zero_create_only", run: func(e *env, n string) (string, error) {
		key := kvKey(n, "k")
		ok, _, err := e.c.KV().CAS(&api.KVPair{Key: key, Value: []byte("first"), ModifyIndex: 0}, nil)
		if err != nil || !ok {
			return "", fmt.Errorf("first CAS 0: %v %v", ok, err)
		}
		ok, _, err = e.c.KV().CAS(&api.KVPair{Key: key, Value: []byte("second"), ModifyIndex: 0}, nil)
		if err != nil || ok {
			return "", fmt.Errorf("second CAS 0: %v %v", ok, err)
		}
		p, _, err := e.c.KV().Get(key, nil)
		if err != nil || p == nil || string(p.Value) != "first" {
			return "", fmt.Errorf("value after: %+v %v", p, err)
		}
		return "created once", nil
	}},

	// api-docs/kv#delete-key: the key is gone afterwards.
	{name: "kv_delete", run: func(e *env, n string) (string, error) {
		key := kvKey(n, "k")
		if _, err := e.c.KV().Put(&api.KVPair{Key: key, Value: []byte("x")}, nil); err != nil {
			return "", err
		}
		if _, err := e.c.KV().Delete(key, nil); err != nil {
			return "", err
		}
		p, _, err := e.c.KV().Get(key, nil)
		if err != nil || p != nil {
			return "", fmt.Errorf("after delete: %+v %v", p, err)
		}
		return "gone", nil
	}},

	// api-docs/kv (blocking queries supported): a blocking get returns when the key changes.
	{name: "kv_blocking_get_returns_on_change", run: func(e *env, n string) (string, error) {
		key := kvKey(n, "k")
		if _, err := e.c.KV().Put(&api.KVPair{Key: key, Value: []byte("v1")}, nil); err != nil {
			return "", err
		}
		_, qm, err := e.c.KV().Get(key, nil)
		if err != nil {
			return "", err
		}
		index := qm.LastIndex
		write := after(300*time.Millisecond, func() error {
			_, err := e.c.KV().Put(&api.KVPair{Key: key, Value: []byte("v2")}, nil)
			return err
		})
		start := time.Now()
		p, qm, err := e.c.KV().Get(key, &api.QueryOptions{WaitIndex: index, WaitTime: 10 * time.Second})
		elapsed := time.Since(start)
		if werr := <-write; werr != nil {
			return "", werr
		}
		if err != nil {
			return "", err
		}
		if p == nil || string(p.Value) != "v2" || elapsed > 5*time.Second || qm.LastIndex <= index {
			return "", fmt.Errorf("after %v: %+v index %d (waited on %d)", elapsed.Round(time.Millisecond), p, qm.LastIndex, index)
		}
		return fmt.Sprintf("after %v", elapsed.Round(time.Millisecond)), nil
	}},

	// kvs_endpoint.go Get: a key's index is its own ModifyIndex, so writing another key does not
	// end a blocking get on it.
	{name: "kv_blocking_get_ignores_other_keys", run: func(e *env, n string) (string, error) {
		key := kvKey(n, "watched")
		if _, err := e.c.KV().Put(&api.KVPair{Key: key, Value: []byte("v1")}, nil); err != nil {
			return "", err
		}
		_, qm, err := e.c.KV().Get(key, nil)
		if err != nil {
			return "", err
		}
		index := qm.LastIndex
		wait := 2 * time.Second
		write := after(300*time.Millisecond, func() error {
			_, err := e.c.KV().Put(&api.KVPair{Key: kvKey(n, "other"), Value: []byte("x")}, nil)
			return err
		})
		start := time.Now()
		_, qm, err = e.c.KV().Get(key, &api.QueryOptions{WaitIndex: index, WaitTime: wait})
		b := blocked{elapsed: time.Since(start)}
		if werr := <-write; werr != nil {
			return "", werr
		}
		if err != nil {
			return "", err
		}
		b.index = qm.LastIndex
		if err := heldFor(b, index, wait); err != nil {
			return "", err
		}
		return fmt.Sprintf("held %v", b.elapsed.Round(time.Millisecond)), nil
	}},

	// ---- ACLs (only with -token) ----

	// api-docs/acl/tokens#read-self-token: the token the request carries, SecretID included; a
	// management token links the global-management policy.
	{name: "acl_token_read_self", acl: true, run: func(e *env, n string) (string, error) {
		t, _, err := e.c.ACL().TokenReadSelf(nil)
		if err != nil {
			return "", err
		}
		if t.SecretID != e.token || t.AccessorID == "" {
			return "", fmt.Errorf("token SecretID matches %v, AccessorID %q", t.SecretID == e.token, t.AccessorID)
		}
		for _, p := range t.Policies {
			if p.Name == "global-management" {
				return "accessor " + t.AccessorID, nil
			}
		}
		return "", fmt.Errorf("policies %+v lack global-management", t.Policies)
	}},

	// api-docs/acl#acl-tokens: a request without a token uses the anonymous token; with default
	// policy deny, list endpoints filter out what it may not read (agent/consul/catalog_endpoint.go
	// ListServices -> filterACL) and answer 200; SetQueryMeta -> maskResultsFilteredByACLs hides the
	// ResultsFilteredByACLs flag from anonymous requests.
	{name: "acl_anonymous_read_filtered", acl: true, run: func(e *env, n string) (string, error) {
		services, qm, err := e.anon.Catalog().Services(nil)
		if err != nil {
			return "", err
		}
		if len(services) != 0 || qm.ResultsFilteredByACLs {
			return "", fmt.Errorf("anonymous sees %v, filtered flag %v", keys(services), qm.ResultsFilteredByACLs)
		}
		return "{} with 200", nil
	}},

	// api-docs/agent/service#register-service needs service:write: the anonymous token has none,
	// so the write is refused with 403 "Permission denied".
	{name: "acl_anonymous_write_denied", acl: true, run: func(e *env, n string) (string, error) {
		err := e.anon.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: n, Name: n, Port: 1})
		return "403", wantStatus(err, 403, "Permission denied")
	}},

	// agent/http.go: a token that does not resolve (acl.ErrNotFound) is 403 "ACL not found".
	{name: "acl_unknown_token_403", acl: true, run: func(e *env, n string) (string, error) {
		_, _, err := e.bad.Catalog().Services(nil)
		return "403", wantStatus(err, 403, "ACL not found")
	}},

	// ---- last, as it touches every service on the node ----

	// api-docs/agent#enable-maintenance-mode: a critical "_node_maintenance" node check with the
	// reason as Notes; a node check applies to every service, so ?passing hides them all.
	{name: "node_maintenance_hides_from_passing", run: func(e *env, n string) (string, error) {
		if err := register(e, &api.AgentServiceRegistration{ID: n, Name: n, Port: 1}); err != nil {
			return "", err
		}
		if _, _, err := health(e, n, true, 1); err != nil {
			return "", err
		}
		if err := e.c.Agent().EnableNodeMaintenance("gc node reason"); err != nil {
			return "", err
		}
		defer func() { _ = e.c.Agent().DisableNodeMaintenance() }()
		if _, _, err := health(e, n, true, 0); err != nil {
			return "", err
		}
		checks, _, err := e.c.Health().Node(e.node, nil)
		if err != nil {
			return "", err
		}
		found := false
		for _, c := range checks {
			if c.CheckID == "_node_maintenance" && c.Status == "critical" && c.Notes == "gc node reason" {
				found = true
			}
		}
		if !found {
			return "", fmt.Errorf("health/node/%s checks %v lack a critical _node_maintenance with the reason", e.node, checkIDs(checks))
		}
		if err := e.c.Agent().DisableNodeMaintenance(); err != nil {
			return "", err
		}
		_, _, err = health(e, n, true, 1)
		return "hidden while on, back after", err
	}},
}

// ---- fixtures shared by several checks ----

// registerPair registers <n>-a and <n>-b, each with a TTL check in the given status.
func registerPair(e *env, n string, metaA, metaB map[string]string, statusA, statusB string) error {
	if err := register(e, &api.AgentServiceRegistration{ID: n + "-a", Name: n, Port: 1, Meta: metaA, Check: ttlCheck(n+"-a-ttl", statusA)}); err != nil {
		return err
	}
	if err := register(e, &api.AgentServiceRegistration{ID: n + "-b", Name: n, Port: 2, Meta: metaB, Check: ttlCheck(n+"-b-ttl", statusB)}); err != nil {
		return err
	}
	if _, err := checkIn(e, n, n+"-a-ttl", statusA, "-"); err != nil {
		return err
	}
	_, err := checkIn(e, n, n+"-b-ttl", statusB, "-")
	return err
}

// catalogRegister registers node <n>-node (NodeMeta rack=r1, gc=<n>) with service <n>-1 (name <n>,
// port 9000) and a passing check <n>-check on it, the way api-docs/catalog#register-entity shows.
func catalogRegister(e *env, n, address string) error {
	reg := &api.CatalogRegistration{
		Node:     n + "-node",
		Address:  address,
		NodeMeta: map[string]string{"rack": "r1", "gc": n},
		Service:  &api.AgentService{ID: n + "-1", Service: n, Port: 9000},
		Check: &api.AgentCheck{Node: n + "-node", CheckID: n + "-check", Name: "external check",
			Status: api.HealthPassing, ServiceID: n + "-1"},
	}
	if _, err := e.c.Catalog().Register(reg, nil); err != nil {
		return fmt.Errorf("catalog/register: %w", err)
	}
	return nil
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func has[V any](m map[string]V, k string) bool { _, found := m[k]; return found }

func checkIDs(checks api.HealthChecks) []string {
	ids := make([]string, 0, len(checks))
	for _, c := range checks {
		ids = append(ids, c.CheckID)
	}
	sort.Strings(ids)
	return ids
}

func catalogIDs(cs []*api.CatalogService) []string {
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		ids = append(ids, c.ServiceID)
	}
	return ids
}

func describeTagged(cs []*api.CatalogService) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, fmt.Sprintf("%s:%v", c.ServiceID, c.ServiceTaggedAddresses))
	}
	return out
}

func describeCatalog(cs []*api.CatalogService) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, fmt.Sprintf("%s on %s/%s port %d meta %v", c.ServiceID, c.Node, c.Address, c.ServicePort, c.NodeMeta))
	}
	return out
}

func nodeNames(nodes []*api.Node) []string {
	out := make([]string, 0, len(nodes))
	for _, node := range nodes {
		out = append(out, node.Node+"/"+node.Address)
	}
	return out
}

// ---- main ----------------------------------------------------------------------------------------

func newClient(addr, token string) (*api.Client, error) {
	cfg := api.DefaultConfig() // then override everything the environment may have set
	cfg.Address, cfg.Scheme = addr, "http"
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		parts := strings.SplitN(addr, "://", 2)
		cfg.Scheme, cfg.Address = parts[0], parts[1]
	}
	cfg.Token, cfg.TokenFile, cfg.Datacenter, cfg.Namespace, cfg.Partition = token, "", "", "", ""
	return api.NewClient(cfg)
}

// serveHTTPTargets starts the local server the HTTP checks probe: /ok 200, /warn 429, /fail 500.
func serveHTTPTargets() (string, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	mux := http.NewServeMux()
	reply := func(code int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(code)
			_, _ = w.Write([]byte(body))
		}
	}
	mux.HandleFunc("/ok", reply(200, "ok"))
	mux.HandleFunc("/warn", reply(429, "slow down"))
	mux.HandleFunc("/fail", reply(500, "broken"))
	go func() { _ = http.Serve(listener, mux) }()
	return "http://" + listener.Addr().String(), nil
}

func runOne(e *env, c check) (res result) {
	res.Name = c.name
	done := make(chan result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- result{Name: c.name, Detail: fmt.Sprintf("panic: %v", p)}
			}
		}()
		detail, err := c.run(e, svcName(c.name))
		if err != nil {
			done <- result{Name: c.name, Detail: err.Error()}
			return
		}
		done <- result{Name: c.name, OK: true, Detail: detail}
	}()
	select {
	case r := <-done:
		return r
	case <-time.After(checkTimeout):
		return result{Name: c.name, Detail: fmt.Sprintf("timed out after %v", checkTimeout)}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8500", "the agent's HTTP address, host:port or a URL")
	token := flag.String("token", "", "a management token, when ACLs are on (also runs the ACL checks)")
	list := flag.Bool("list", false, "print every check's name (JSON lines {name, acl}) and exit")
	only := flag.String("run", "", "run only the checks whose name matches this regular expression")
	flag.Parse()

	out := json.NewEncoder(os.Stdout)
	if *list {
		for _, c := range checks {
			_ = out.Encode(map[string]any{"name": c.name, "acl": c.acl})
		}
		return
	}
	var filter *regexp.Regexp
	if *only != "" {
		var err error
		if filter, err = regexp.Compile(*only); err != nil {
			fmt.Fprintf(os.Stderr, "goclient: -run: %v\n", err)
			os.Exit(2)
		}
	}

	e := &env{token: *token}
	var err error
	if e.c, err = newClient(*addr, *token); err == nil {
		if e.anon, err = newClient(*addr, ""); err == nil {
			e.bad, err = newClient(*addr, "1b4a2f6c-0000-4000-8000-00000000dead")
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "goclient: cannot make a client: %v\n", err)
		os.Exit(2)
	}
	// What every check needs: the agent's node name and datacenter (agent/self) and the node's
	// address (catalog/nodes). Without agent/self the program cannot run at all.
	self, err := e.c.Agent().Self()
	if err != nil {
		fmt.Fprintf(os.Stderr, "goclient: cannot read %s/v1/agent/self: %v\n", *addr, err)
		os.Exit(2)
	}
	e.node, _ = self["Config"]["NodeName"].(string)
	e.dc, _ = self["Config"]["Datacenter"].(string)
	if e.node == "" {
		fmt.Fprintf(os.Stderr, "goclient: agent/self has no Config.NodeName\n")
		os.Exit(2)
	}
	if nodes, _, err := e.c.Catalog().Nodes(nil); err == nil {
		for _, node := range nodes {
			if node.Node == e.node {
				e.nodeAddr = node.Address
			}
		}
	}
	if e.httpBase, err = serveHTTPTargets(); err != nil {
		fmt.Fprintf(os.Stderr, "goclient: cannot listen for HTTP check targets: %v\n", err)
		os.Exit(2)
	}

	count := 0
	for _, c := range checks {
		if (c.acl && *token == "") || (filter != nil && !filter.MatchString(c.name)) {
			continue
		}
		_ = out.Encode(runOne(e, c))
		count++
	}
	_ = out.Encode(map[string]any{"end": true, "count": count})
}
