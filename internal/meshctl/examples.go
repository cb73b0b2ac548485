package meshctl

import "github.com/spf13/cobra"

// examples is each command's Examples: section, by command path. A
// test walks the command tree and fails on a command without one.
var examples = map[string]string{
	"meshctl token": `  meshctl token create --ns default --sa web --uses 3
  meshctl token list`,
	"meshctl token create": `  # A token for 3 pods of the service account web in namespace default, valid 1h:
  meshctl token create --ns default --sa web --uses 3 --ttl 1h
  # Only the secret, for a Kubernetes Secret:
  meshctl token create --ns default --sa web -o jsonpath='{.secret}'`,
	"meshctl token list": `  meshctl token list
  meshctl token list -o wide
  meshctl token list -o name`,
	"meshctl token revoke": `  meshctl token revoke 6f1c0e2a`,
	"meshctl certs": `  meshctl certs
  meshctl certs --all -o wide
  meshctl certs -o jsonpath='{range .certificates[*]}{.spiffeId}{"\t"}{.notAfter}{"\n"}{end}'`,
	"meshctl proxies": `  meshctl proxies
  meshctl proxies -o wide
  # The instance IDs of web's proxies:
  meshctl proxies -o jsonpath='{.proxies[?(@.service=="web")].instanceId}'`,
	"meshctl apply": `  meshctl apply -f mesh.yaml
  meshctl apply -f manifests/ --dry-run
  # Apply, then wait until every connected proxy ACKed the new revision:
  meshctl apply -f mesh.yaml --wait=2m
  # What get prints, apply reads back:
  meshctl get route api -o yaml > api.yaml && meshctl apply -f api.yaml`,
	"meshctl get": `  meshctl get routes
  meshctl get rt api-v1 -o yaml
  meshctl get all -A -o wide
  meshctl get svc -n prod -o name
  meshctl get rl -o jsonpath='{.items[*].spec.requestsPerSecond}'`,
	"meshctl diff": `  meshctl diff -f mesh.yaml
  # In a script: apply only when something changed.
  meshctl diff -f mesh.yaml >/dev/null || [ $? -ne 1 ] || meshctl apply -f mesh.yaml`,
	"meshctl delete": `  meshctl delete route api-v1
  meshctl delete ratelimit api -n prod --wait
  # Everything a file declares (Routes and policies first, Services last):
  meshctl delete -f mesh.yaml --ignore-not-found`,
	"meshctl proxy-status": `  meshctl proxy-status
  meshctl proxy-status -o wide
  meshctl proxy-status -o jsonpath='{range .proxies[*]}{.proxy.instanceId}{" "}{.state}{"\n"}{end}'`,
	"meshctl proxy-config": `  meshctl proxy-config web-7d9f8c-abcde
  meshctl proxy-config web-7d9f8c-abcde -o json`,
	"meshctl ca": `  meshctl ca status
  meshctl ca rotate --wait`,
	"meshctl ca rotate": `  # Start a rotation and follow it until it is done:
  meshctl ca rotate --wait=30m
  # Move a stuck rotation on, breaking the proxies it waits for:
  meshctl ca rotate --force --yes`,
	"meshctl ca status": `  meshctl ca status
  meshctl ca status -o jsonpath='{.phase}'`,
	"meshctl proxy": `  meshctl proxy forget web-7d9f8c-abcde
  meshctl proxy revoke web-7d9f8c-abcde`,
	"meshctl proxy forget": `  meshctl proxy forget web-7d9f8c-abcde
  meshctl proxy forget web-7d9f8c-abcde --force`,
	"meshctl proxy revoke":  `  meshctl proxy revoke web-7d9f8c-abcde`,
	"meshctl identity":      `  meshctl identity deny spiffe://minimesh.local/ns/default/sa/web`,
	"meshctl identity deny": `  meshctl identity deny spiffe://minimesh.local/ns/default/sa/web`,
	"meshctl operator": `  meshctl operator list
  meshctl operator revoke 5a:3f:...`,
	"meshctl operator list": `  meshctl operator list --all
  meshctl operator list -o name`,
	"meshctl operator revoke": `  meshctl operator revoke 5A:3F:9C:01 --reason "laptop lost"`,
	"meshctl backup": `  meshctl backup /secure/meshd-$(date +%F).db
  # Restore, with meshd stopped:
  meshd --data-dir /var/lib/meshd --restore /secure/meshd-2024-05-01.db`,
	"meshctl top": `  meshctl top web-7d9f8c-abcde
  meshctl top web-7d9f8c-abcde -o json`,
	"meshctl procz": `  meshctl procz web-7d9f8c-abcde 1`,
	"meshctl authz": `  meshctl authz explain --from spiffe://minimesh.local/ns/default/sa/web --to api --path /admin`,
	"meshctl authz explain": `  meshctl authz explain --from spiffe://minimesh.local/ns/default/sa/web --to api --method GET --path /v1/items
  # In a script (exit 0: allowed, 1: denied):
  if meshctl authz explain --from spiffe://minimesh.local/ns/default/sa/web --to api --path /admin >/dev/null; then echo open; fi`,
	"meshctl check": `  meshctl check
  meshctl check --proxy web-7d9f8c-abcde
  meshctl check -o json`,
	"meshctl version": `  meshctl version
  meshctl version --client
  meshctl version -o jsonpath='{.serverVersion.version}'`,
	"meshctl inject": `  meshctl inject -f deployment.yaml | kubectl apply -f -
  meshctl inject -f app.yaml --service api --port 8080 --capture-outbound`,
	"meshctl help": `  meshctl help get
  meshctl get --help`,
	"meshctl completion": `  source <(meshctl completion bash)
  meshctl completion zsh > "${fpath[1]}/_meshctl"`,
	"meshctl completion bash": `  source <(meshctl completion bash)
  meshctl completion bash > /etc/bash_completion.d/meshctl`,
	"meshctl completion zsh":        `  meshctl completion zsh > "${fpath[1]}/_meshctl"`,
	"meshctl completion fish":       `  meshctl completion fish > ~/.config/fish/completions/meshctl.fish`,
	"meshctl completion powershell": `  meshctl completion powershell | Out-String | Invoke-Expression`,
}

// addExamples adds cobra's help and completion commands now (not at
// Execute), so that they get examples too, and sets every command's
// Example from examples.
func addExamples(root *cobra.Command) {
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	walk(root, func(c *cobra.Command) {
		if e, ok := examples[c.CommandPath()]; ok && c.Example == "" {
			c.Example = e
		}
	})
}
