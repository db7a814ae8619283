//! The runner's pure parts on synthetic input (no root needed): templates, IP classes,
//! actions, the command line, the report's shape, table printing and the file writer.

use std::collections::BTreeMap;
use std::net::IpAddr;

use palisade_tests::conformance::case::{self, Action, ExpectedCell};
use palisade_tests::conformance::cli::{self, Command, Source};
use palisade_tests::conformance::manifests::{self, DirWriter};
use palisade_tests::conformance::report::{
    self, ObservedCell, ProbeReport, Report, Status, Target,
};
use palisade_tests::conformance::table;
use palisade_tests::conformance::template::{self, IpClass, PodIps};
use palisade_tests::conformance::world::World;
use palisade_tests::{Family, IpFamily};
use serde_json::{json, Value};

fn ips(pairs: &[(&str, &str)]) -> PodIps {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.parse::<IpAddr>().unwrap()))
        .collect()
}

#[test]
fn templates_for_each_function_and_family() {
    let v4 = ips(&[("x/a", "10.244.1.23")]);
    let v6 = ips(&[("x/a", "fd00:10:244:1::17")]);
    let fill = |t: &str, ips: &PodIps| template::fill_str(t, ips).unwrap();
    assert_eq!(fill("{{podIP x/a}}/32", &v4), "10.244.1.23/32");
    assert_eq!(fill("{{podIP x/a}}/32", &v6), "fd00:10:244:1::17/128");
    assert_eq!(fill("{{podIP x/a}}", &v4), "10.244.1.23");
    assert_eq!(fill("{{podNet4 x/a}}", &v4), "0.0.0.0/4");
    assert_eq!(fill("{{podNet4 x/a}}", &v6), "f000::/4");
    assert_eq!(fill("{{cidrZeroes8 x/a}}", &v4), "10.244.1.0/24");
    assert_eq!(fill("{{cidrZeroes4 x/a}}", &v4), "10.244.1.16/28");
    assert_eq!(fill("{{cidrZeroes8 x/a}}", &v6), "fd00:10:244:1::/120");
    assert_eq!(fill("{{cidrZeroes4 x/a}}", &v6), "fd00:10:244:1::10/124");
    assert_eq!(fill("a {{ podIP  x/a }}/32 b", &v4), "a 10.244.1.23/32 b");
    for bad in ["{{podIP x/b}}", "{{podIP x/a", "{{nope x/a}}", "{{podIP}}"] {
        assert!(template::fill_str(bad, &v4).is_err(), "{bad}");
    }
    let policy = json!({"spec": {"egress": [{"to": [{"ipBlock": {
        "cidr": "{{podNet4 x/a}}", "except": ["{{podIP x/a}}/32"]}}]}]}});
    let filled = template::fill_value(&policy, &v6).unwrap();
    assert_eq!(
        filled["spec"]["egress"][0]["to"][0]["ipBlock"],
        json!({"cidr": "f000::/4", "except": ["fd00:10:244:1::17/128"]})
    );
}

#[test]
fn ip_classes_relative_to_the_template_pod() {
    let r: IpAddr = "10.244.0.20".parse().unwrap();
    let class = |ip: &str| template::ip_class(ip.parse().unwrap(), r);
    assert_eq!(class("10.244.0.17"), IpClass::A);
    assert_eq!(class("10.244.0.33"), IpClass::B);
    assert_eq!(class("10.244.1.20"), IpClass::C);
    let r6: IpAddr = "fd00:10:244::14".parse().unwrap();
    assert_eq!(
        template::ip_class("fd00:10:244::1f".parse().unwrap(), r6),
        IpClass::A
    );
    assert_eq!(
        template::ip_class("fd00:10:244::ff".parse().unwrap(), r6),
        IpClass::B
    );
    assert_eq!(
        template::ip_class("fd00:10:244:1::14".parse().unwrap(), r6),
        IpClass::C
    );
}

fn class_cell(table: &[(&str, bool)]) -> ExpectedCell {
    ExpectedCell {
        from: "x/a".into(),
        to: "x/c".into(),
        allowed: None,
        loopback: false,
        allowed_by_ip_class: Some(table.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()),
        port: None,
    }
}

#[test]
fn allowed_by_ip_class_resolves_from_real_ips() {
    let refs = vec!["x/b".to_owned()];
    let cell = class_cell(&[("x/c=A", true), ("x/c=B", false), ("x/c=C", true)]);
    let near = ips(&[("x/b", "10.244.0.2"), ("x/c", "10.244.0.3")]);
    let mid = ips(&[("x/b", "10.244.0.2"), ("x/c", "10.244.0.40")]);
    let far = ips(&[("x/b", "10.244.0.2"), ("x/c", "10.244.1.3")]);
    assert!(template::resolve(&cell, &near, &refs).unwrap());
    assert!(!template::resolve(&cell, &mid, &refs).unwrap());
    assert!(template::resolve(&cell, &far, &refs).unwrap());
    let multi = class_cell(&[("x/a=A,x/c=BC", false), ("x/a=BC", true), ("x/c=A", true)]);
    let all = ips(&[
        ("x/a", "10.244.0.5"),
        ("x/b", "10.244.0.2"),
        ("x/c", "10.244.0.40"),
    ]);
    assert!(!template::resolve(&multi, &all, &refs).unwrap());
    assert!(
        template::resolve(&cell, &near, &[]).is_err(),
        "no reference pod"
    );
    let partial = class_cell(&[("x/c=A", true)]);
    assert!(
        template::resolve(&partial, &far, &refs).is_err(),
        "no key holds"
    );
    let fixed = ExpectedCell {
        allowed: Some(false),
        ..class_cell(&[])
    };
    assert!(!template::resolve(&fixed, &far, &refs).unwrap());
}

const GENERIC: &str = r#"{"id": "g-1", "initial_state": {
  "namespaces": {"alpha": {"labels": {"team": "a"}}},
  "pods": {"alpha/p": {"labels": {"app": "p"}, "containerPorts": [
    {"name": "web", "containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}]}}},
  "steps": [
    {"step": 1, "action": "create_namespace", "namespace": "beta", "labels": {"team": "b"}},
    {"step": 2, "action": "create_pod", "pod": "beta/q", "labels": {"app": "q"}},
    {"step": 3, "action": "set_pod_labels", "pod": "alpha/p", "labels": {"tier": "web"}},
    {"step": 4, "action": "add_namespace_labels", "namespace": "alpha", "labels": {"x": "1"},
     "resulting_labels": {"team": "a", "x": "1", "kubernetes.io/metadata.name": "alpha"}},
    {"step": 5, "action": "create_policy", "namespace": "beta", "policy": {
      "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
      "metadata": {"name": "deny"}, "spec": {"podSelector": {}}}},
    {"step": 6, "action": "probe", "protocol": "TCP", "port_name": "web",
     "probe_by_named_port": true, "pods": ["beta/q", "alpha/p"], "expected": [
      {"from": "alpha/p", "to": "alpha/p", "allowed": true, "loopback": true},
      {"from": "alpha/p", "to": "beta/q", "allowed": false},
      {"from": "beta/q", "to": "alpha/p", "allowed": true},
      {"from": "beta/q", "to": "beta/q", "allowed": false, "loopback": true}]},
    {"step": 7, "action": "delete_policy", "namespace": "beta", "name": "deny"},
    {"step": 8, "action": "delete_pod", "pod": "beta/q"},
    {"step": 9, "action": "delete_namespace", "namespace": "beta"},
    {"step": 10, "action": "set_namespace_labels", "namespace": "alpha", "labels": {}},
    {"step": 11, "action": "delete_all_policies"}]}"#;

#[test]
fn every_action_applies_to_the_world() {
    let cases = case::parse(GENERIC).unwrap();
    let c = &cases[0];
    c.check().unwrap();
    let mut w = World::new(&c.initial_state).unwrap();
    let mut created = Vec::new();
    let mut deleted = Vec::new();
    for s in &c.steps {
        if let Action::Probe(p) = &s.action {
            w.check_pods(p.pods.as_deref()).unwrap();
            assert_eq!(w.pods["beta/q"].ports, w.pods["alpha/p"].ports);
            assert_eq!(w.policies.len(), 1);
            assert_eq!(
                w.pods["alpha/p"].labels,
                BTreeMap::from([("tier".into(), "web".into())])
            );
        }
        let fx = w
            .apply(&s.action)
            .unwrap_or_else(|e| panic!("step {}: {e}", s.step));
        created.extend(fx.pods_created);
        deleted.extend(fx.pods_deleted);
    }
    assert_eq!(
        (created, deleted),
        (vec!["beta/q".to_owned()], vec!["beta/q".to_owned()])
    );
    assert_eq!(w.namespaces.len(), 1);
    assert_eq!(
        w.namespaces["alpha"].len(),
        1,
        "only kubernetes.io/metadata.name is left"
    );
    let bad = |json: Value| {
        let action: Action = serde_json::from_value(json).unwrap();
        World::new(&c.initial_state)
            .unwrap()
            .apply(&action)
            .unwrap_err()
    };
    bad(json!({"action": "delete_pod", "pod": "alpha/zz"}));
    bad(json!({"action": "create_pod", "pod": "gamma/q"}));
    bad(json!({"action": "delete_policy", "namespace": "alpha", "name": "nope"}));
    let e = bad(
        json!({"action": "add_pod_labels", "pod": "alpha/p", "labels": {"b": "2"},
                       "resulting_labels": {"b": "2"}}),
    );
    assert!(e.to_string().contains("case says"), "{e}");
}

#[test]
fn case_files_come_in_three_shapes() {
    let one = case::parse(GENERIC).unwrap();
    let wrapped = case::parse(&format!("{{\"cases\": [{GENERIC}]}}")).unwrap();
    let array = case::parse(&format!("[{GENERIC}, {GENERIC}]")).unwrap();
    assert_eq!((one.len(), wrapped.len(), array.len()), (1, 1, 2));
    let misnumbered = GENERIC.replace("\"step\": 2,", "\"step\": 7,");
    assert!(case::parse(&misnumbered).unwrap()[0].check().is_err());
}

#[test]
fn command_line() {
    let parse = |a: &[&str]| cli::parse(a.iter().map(|s| (*s).to_owned()));
    let Command::Run(a) = parse(&["--cases", "f.json"]).unwrap() else {
        panic!()
    };
    assert_eq!(
        (a.family, a.targets.clone(), a.source),
        (Family::Ipv4, vec![Target::Service], Source::Manifests)
    );
    let Command::Run(a) = parse(&[
        "--cases",
        "a.json",
        "--cases=b.json",
        "--case",
        "x",
        "--case",
        "y",
        "--ip-family",
        "dual",
        "--target",
        "both",
        "--source",
        "kube",
        "--report",
        "out.json",
    ])
    .unwrap() else {
        panic!()
    };
    assert_eq!(a.cases.len(), 2);
    assert_eq!(a.only, ["x", "y"]);
    assert_eq!(
        (a.family, a.targets.clone(), a.source),
        (
            Family::Dual,
            vec![Target::Service, Target::Pod],
            Source::Kube
        )
    );
    assert_eq!(a.report.unwrap().to_str(), Some("out.json"));
    assert_eq!(parse(&["--help"]).unwrap(), Command::Help);
    assert!(parse(&[]).is_err());
    assert!(parse(&["--cases"]).is_err());
    assert!(parse(&["--cases", "a", "--target", "node"]).is_err());
    assert!(parse(&["--cases", "a", "--dry-run"]).is_err());
    assert!(parse(&["--cases", "a", "--ip-family", "ipv4", "--ip-family", "ipv6"]).is_err());
}

fn sample_probe(status: Status) -> ProbeReport {
    ProbeReport {
        step: 2,
        protocol: "TCP".into(),
        port: Some(80),
        family: IpFamily::Ipv4,
        target: Target::Service,
        status,
        reason: String::new(),
        pod_ips: BTreeMap::from([("x/a".into(), "10.244.0.5".into())]),
        observed: vec![ObservedCell {
            from: "x/a".into(),
            to: "x/b".into(),
            allowed: true,
            loopback: false,
            error: None,
        }],
        differing: Vec::new(),
        loopback: Default::default(),
        attempts: 1,
        seconds: 0.1,
        partial: false,
        judged: 1,
    }
}

#[test]
fn report_has_the_fixed_shape() {
    let case = |id: &str, probes: Vec<ProbeReport>| report::CaseReport {
        id: id.into(),
        status: report::case_status(&probes),
        reason: String::new(),
        probes,
        name: String::new(),
        seconds: 1.0,
        agent_problems: Vec::new(),
    };
    let cases = vec![
        case(
            "a",
            vec![sample_probe(Status::Passed), sample_probe(Status::Skipped)],
        ),
        case("b", vec![sample_probe(Status::Failed)]),
        case("c", vec![sample_probe(Status::Skipped)]),
    ];
    let r = Report::new(cases, 212.44, "dual", &[Target::Service, Target::Pod]);
    let v: Value = serde_json::to_value(&r).unwrap();
    let s = &v["summary"];
    assert_eq!(
        (&s["cases"], &s["passed"], &s["failed"], &s["skipped"]),
        (&json!(3), &json!(1), &json!(1), &json!(1))
    );
    assert_eq!(s["seconds"], json!(212.4));
    let c = &v["cases"][0];
    assert_eq!((&c["id"], &c["status"]), (&json!("a"), &json!("passed")));
    assert!(c["reason"].is_string());
    let p = &c["probes"][0];
    for key in [
        "step", "protocol", "port", "family", "target", "status", "reason", "pod_ips", "observed",
    ] {
        assert!(p.get(key).is_some(), "probe entry lacks {key}");
    }
    assert_eq!(
        (&p["family"], &p["target"], &p["protocol"]),
        (&json!("ipv4"), &json!("service"), &json!("TCP"))
    );
    assert_eq!(p["pod_ips"]["x/a"], "10.244.0.5");
    assert_eq!(
        p["observed"][0],
        json!({"from": "x/a", "to": "x/b", "allowed": true})
    );
    let back: Report = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}

#[test]
fn comparison_keeps_loopback_apart_and_prints_side_by_side() {
    let cases = case::parse(GENERIC).unwrap();
    let Some((_, probe)) = cases[0].probes().next() else {
        panic!()
    };
    let ex = table::expected(probe, &PodIps::new(), &[]).unwrap();
    assert_eq!(ex.order, ["alpha/p", "beta/q"]);
    // Observed: alpha/p cannot reach itself, beta/q reaches itself, alpha/p -> beta/q open.
    let observed = [false, true, true, true];
    let cmp = table::compare(&ex, &observed);
    assert_eq!(cmp.differing.len(), 1);
    assert_eq!(cmp.loopback_differing.len(), 2);
    assert!(!cmp.passes(false) && !cmp.passes(true));
    let ok = table::compare(&ex, &[false, false, true, true]);
    assert!(ok.passes(false) && !ok.passes(true));
    let text = table::side_by_side(
        &ex.order,
        &table::grid(&ex, &[true, false, true, false]),
        &table::grid(&ex, &observed),
        false,
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("expected")
            && lines[0].contains("| observed")
            && lines[0].contains("| comparison")
    );
    assert_eq!(lines[1].matches("alpha/p").count(), 3);
    assert!(lines[2].ends_with("x       X"), "{text}");
    assert!(lines[3].ends_with(".       x"), "{text}");
    let described = table::describe(&cmp.differing);
    assert_eq!(described, "alpha/p -> beta/q: expected X observed .");
    let upstream = table::upstream_lines(&ex.order, &table::grid(&ex, &[true, false, true, false]));
    assert_eq!(
        upstream,
        ["-\talpha/p\tbeta/q", "alpha/p\t.\tX", "beta/q\t.\tX"]
    );
}

#[test]
fn dir_writer_writes_changes_and_revision_atomically() {
    let dir = std::env::temp_dir().join(format!("palisade-conf-unit-{}", std::process::id()));
    let mut w = DirWriter::new(dir.clone()).unwrap();
    let files = BTreeMap::from([
        ("a.json".to_owned(), json!({"a": 1})),
        ("b.json".to_owned(), json!(2)),
    ]);
    assert!(w.sync(&files).unwrap());
    assert!(!w.sync(&files).unwrap(), "nothing changed");
    let fewer = BTreeMap::from([("a.json".to_owned(), json!({"a": 2}))]);
    assert!(w.sync(&fewer).unwrap());
    manifests::write_revision(&dir, 7).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [".revision", "a.json"], "no temporary files left");
    assert_eq!(
        std::fs::read_to_string(dir.join(".revision"))
            .unwrap()
            .trim(),
        "7"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn synthetic_case_file_applies_step_by_step() {
    let file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/synthetic.json");
    let cases = case::load_all(&[file], &[]).unwrap();
    assert_eq!(cases.len(), 2);
    for c in &cases {
        let refs = template::reference_pods(c);
        let mut w = World::new(&c.initial_state).unwrap();
        for s in &c.steps {
            match &s.action {
                Action::Probe(p) => {
                    w.check_pods(p.pods.as_deref())
                        .unwrap_or_else(|e| panic!("{} {}: {e}", c.id, s.step));
                    let keys: Vec<(String, String)> = w
                        .pods
                        .keys()
                        .enumerate()
                        .map(|(i, k)| (k.clone(), format!("10.244.{}.{}", i % 2, 2 + i / 2)))
                        .collect();
                    let pairs: Vec<(&str, &str)> =
                        keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    let ex = table::expected(p, &ips(&pairs), &refs)
                        .unwrap_or_else(|e| panic!("{} {}: {e}", c.id, s.step));
                    assert_eq!(ex.cells.len(), w.pods.len().pow(2), "{} {}", c.id, s.step);
                }
                other => {
                    w.apply(other)
                        .unwrap_or_else(|e| panic!("{} {}: {e}", c.id, s.step));
                }
            }
        }
    }
    assert_eq!(template::reference_pods(&cases[0]), ["alpha/p"]);
}
