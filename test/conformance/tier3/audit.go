package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// auditPolicy records every request at Metadata level: who, verb, resource, response code.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
`

// unusedRules are rules the shipped ClusterRoles hold that no Tier 3 flow exercises, each
// with the reason it stays ("<ServiceAccount name> <group>/<resource> <verb>": the same for
// the kustomize overlay and the chart, whatever their namespace).
var unusedRules = map[string]string{
	"tessera /events create":                        "only on a failed prepare or a checkpoint moved aside; test/deploy.test.ts runs that flow against an enforcing API server",
	"tessera /events patch":                         "the rate-limited repeat of an Event; test/deploy.test.ts runs that flow",
	"tessera resource.k8s.io/resourceslices update": "rewriting a slice after a device change; test/deploy.test.ts runs the publisher's change/shrink flow",
	"tessera resource.k8s.io/resourceslices delete": "removing slices when the node shrinks; test/deploy.test.ts runs the publisher's change/shrink flow",
}

// rule is one (ServiceAccount, API group, resource, verb) a shipped role grants.
type rule struct {
	User, Group, Resource, Verb, Role string
}

func (r rule) key() string { return fmt.Sprintf("%s %s/%s %s", r.User, r.Group, r.Resource, r.Verb) }

// saKey is key with the ServiceAccount's name only (no namespace).
func (r rule) saKey() string {
	return fmt.Sprintf("%s %s/%s %s", r.User[strings.LastIndex(r.User, ":")+1:], r.Group, r.Resource, r.Verb)
}

// boundRules expands the rules of every role bound to one of the identities.
func boundRules(objs []unstructured.Unstructured, ids []*identity) []rule {
	users := map[string]bool{}
	for _, id := range ids {
		users[id.Namespace+"/"+id.Name] = true
	}
	roles := map[string][]any{} // "ClusterRole/name" or "Role/ns/name" -> rules
	for _, o := range objs {
		switch o.GetKind() {
		case "ClusterRole":
			rs, _, _ := unstructured.NestedSlice(o.Object, "rules")
			roles["ClusterRole/"+o.GetName()] = rs
		case "Role":
			rs, _, _ := unstructured.NestedSlice(o.Object, "rules")
			roles["Role/"+o.GetNamespace()+"/"+o.GetName()] = rs
		}
	}
	seen := map[string]bool{}
	var out []rule
	for _, o := range objs {
		if o.GetKind() != "ClusterRoleBinding" && o.GetKind() != "RoleBinding" {
			continue
		}
		kind, _, _ := unstructured.NestedString(o.Object, "roleRef", "kind")
		name, _, _ := unstructured.NestedString(o.Object, "roleRef", "name")
		ref := "ClusterRole/" + name
		if kind == "Role" {
			ref = "Role/" + o.GetNamespace() + "/" + name
		}
		subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
		for _, s := range subjects {
			sm := s.(map[string]any)
			ns, _ := sm["namespace"].(string)
			sn, _ := sm["name"].(string)
			if sm["kind"] != "ServiceAccount" || !users[ns+"/"+sn] {
				continue
			}
			user := "system:serviceaccount:" + ns + ":" + sn
			for _, r := range roles[ref] {
				rm := r.(map[string]any)
				for _, g := range strs(rm["apiGroups"]) {
					for _, res := range strs(rm["resources"]) {
						for _, v := range strs(rm["verbs"]) {
							ru := rule{User: user, Group: g, Resource: res, Verb: v, Role: ref}
							if !seen[ru.key()] {
								seen[ru.key()] = true
								out = append(out, ru)
							}
						}
					}
				}
			}
		}
	}
	return out
}

func strs(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

type auditEvent struct {
	Verb string `json:"verb"`
	User struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		APIGroup    string `json:"apiGroup"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// usedRules reads the audit log: the (user, group, resource, verb) of every request that
// succeeded (a denied request does not show that a rule is needed).
func usedRules(path string) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	used := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e auditEvent
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.ObjectRef == nil || e.ResponseStatus == nil || e.ResponseStatus.Code >= 400 {
			continue
		}
		res := e.ObjectRef.Resource
		if e.ObjectRef.Subresource != "" {
			res += "/" + e.ObjectRef.Subresource
		}
		used[rule{User: e.User.Username, Group: e.ObjectRef.APIGroup, Resource: res, Verb: e.Verb}.key()]++
	}
	return used, sc.Err()
}

// checkRulesUsed fails for every granted rule no request of its ServiceAccount used, unless
// unusedRules gives the reason it stays; wildcards fail outright.
func checkRulesUsed(label, auditLog string, rules []rule, wrap func(string, error) bool) (failed bool) {
	used, err := usedRules(auditLog)
	if !wrap("audit-log", err) {
		return true
	}
	if len(rules) == 0 {
		return !wrap("rules-bound", fmt.Errorf("no role of deploy/ is bound to the agent's or the proxy's ServiceAccount"))
	}
	var unused, kept []string
	for _, r := range rules {
		switch {
		case r.Group == "*" || r.Resource == "*" || r.Verb == "*":
			unused = append(unused, r.key()+" (wildcard in "+r.Role+")")
		case used[r.key()] > 0:
		case unusedRules[r.saKey()] != "":
			kept = append(kept, r.key()+": "+unusedRules[r.saKey()])
		default:
			unused = append(unused, r.key()+" ("+r.Role+")")
		}
	}
	sort.Strings(unused)
	fmt.Fprintf(os.Stderr, "tier3 %s: %d granted rules, %d used by the flows above, %d kept with a reason, %d unused\n", label, len(rules), len(rules)-len(unused)-len(kept), len(kept), len(unused))
	for _, k := range kept {
		fmt.Fprintf(os.Stderr, "tier3 %s:   kept unused: %s\n", label, k)
	}
	if len(unused) > 0 {
		return !wrap(fmt.Sprintf("every-rule-used (%d rules)", len(rules)), fmt.Errorf("granted but never used: %s", strings.Join(unused, "; ")))
	}
	return !wrap(fmt.Sprintf("every-rule-used (%d rules)", len(rules)), nil)
}
