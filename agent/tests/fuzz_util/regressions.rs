//! Inputs the fuzzer found (or that are known to be nasty), replayed by `fuzz_regressions` with
//! every check on. Each names what it guards against.

/// (name, text, is JSON).
pub const CASES: &[(&str, &str, bool)] = &[
    (
        "found by the fuzzer: a YAML syntax error used to loop forever (serde-yaml#193)",
        "\napiVersion: v1\n    kind: Namespace\nmetadata: {na namespace: x}\nspe%YAML 1.1\nc:\n  clusterIQ: 10.96.0.10\n  clusterIPs: [1\n0.96.0.10, \"fd00:96::10\"]\n  selme:rx, l-0els: {tuam: red}}",
        false,
    ),
    (
        "an unclosed flow mapping, then a valid document",
        "app: {apikey\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: q}\n",
        false,
    ),
    (
        "yaml alias bomb is refused, not expanded",
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n",
        false,
    ),
    (
        "deeply nested JSON",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        true,
    ),
    (
        "full port range, endPort 65535, and endPort beyond it",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: r, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: 1, endPort: 65535}, {port: 0, endPort: 65536}, {port: 65535, endPort: 1}]}]\n",
        false,
    ),
    (
        "a pod with the node's address and a duplicate pod IP",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: dup, namespace: x, labels: {app: b}}\nspec: {nodeName: node-1}\nstatus: {podIPs: [{ip: 10.0.0.1}, {ip: 192.168.1.1}]}\n",
        false,
    ),
    (
        "ipBlock /0 with excepts of the other family and outside the cidr",
        r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"r","namespace":"x"},"spec":{"podSelector":{},"egress":[{"to":[{"ipBlock":{"cidr":"0.0.0.0/0","except":["fd00::/64","10.0.0.0/8","0.0.0.0/0","11.0.0.0/7"]}},{"ipBlock":{"cidr":"::ffff:10.0.0.0/104"}}]}]}}"#,
        true,
    ),
];
