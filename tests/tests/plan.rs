//! `producer plan` through the real binaries, on a real Kubernetes control plane and the ARM
//! simulator: the plan of an update lists exactly what the update then does (the node pool's
//! count changed, the workload removed, nothing else), after which verify is clean and the same
//! plan lists everything unchanged. An offboarding of a tenant the worker never saw is exit 4,
//! and an invalid request exit 2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::{ProcessHarness, own_admin_group, unique_tenant};
use onboarding_testkit::real_cluster::{RealCluster, bind_verifier_to_worker};
use serde_json::{Value, json};

/// `producer --json plan ARGS`: its exit code and plan.
async fn plan(h: &ProcessHarness, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["plan"];
    all.extend_from_slice(args);
    let out = h.producer(&all, Duration::from_secs(120)).await;
    let json = if out.stdout.trim().is_empty() {
        Value::Null
    } else {
        out.json()
    };
    (out.code, json)
}

/// The plan's items that are not `unchanged`: name → (action, changed paths).
fn actions(plan: &Value) -> Vec<(String, String, Vec<String>)> {
    plan["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["action"] != "unchanged")
        .map(|i| {
            let paths = i["changes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["path"].as_str().map(str::to_string))
                .collect();
            (
                i["name"].as_str().unwrap().to_string(),
                i["action"].as_str().unwrap().to_string(),
                paths,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_of_an_update_lists_exactly_what_the_update_then_does() {
    let Some(cluster) = RealCluster::connect("producer plan on a real cluster").await else {
        return;
    };
    let Some(h) = ProcessHarness::on_real_cluster(&cluster).await else {
        return;
    };
    bind_verifier_to_worker(&cluster).await;
    let tenant = unique_tenant("pln");
    let group = own_admin_group(&tenant);
    let on = format!("on-{tenant}");
    let event = h
        .request(
            &[
                "send",
                "--tenant",
                &tenant,
                "--request-id",
                &on,
                "--admin-group",
                &group,
                "--workload",
                "1",
            ],
            &on,
        )
        .await;
    assert_eq!(event.ty, "tenant.onboarded", "{event:?}");
    h.wait_for_empty_queue(Duration::from_secs(60)).await;

    // The same request again: nothing would change.
    let (code, same) = plan(
        &h,
        &[
            "send",
            "--tenant",
            &tenant,
            "--admin-group",
            &group,
            "--workload",
            "1",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{same}");
    assert_eq!(
        actions(&same),
        vec![],
        "the onboarded spec plans no change: {same:#}"
    );

    // The update: two nodes, no workload.
    let update = [
        "send",
        "--tenant",
        &tenant,
        "--admin-group",
        &group,
        "--count",
        "2",
    ];
    let (code, planned) = plan(&h, &update).await;
    assert_eq!(code, Some(0), "{planned}");
    assert_eq!(planned["kind"], "onboard");
    assert_eq!(
        actions(&planned),
        vec![
            (
                "node_pool".to_string(),
                "change".to_string(),
                vec!["properties.count".to_string()]
            ),
            ("workload".to_string(), "remove".to_string(), vec![]),
        ],
        "{planned:#}"
    );
    let count = planned["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "node_pool")
        .map(|i| i["changes"][0].clone())
        .unwrap();
    assert_eq!(
        (count["old"].clone(), count["new"].clone()),
        (json!(1), json!(2))
    );
    assert!(
        planned["items"].as_array().unwrap().len() > 8,
        "every resource is listed, unchanged ones too: {planned:#}"
    );

    // What the update then does: the pool has two nodes, the Deployment is gone, verify is clean.
    let up = format!("up-{tenant}");
    let mut args = update.to_vec();
    args.extend(["--request-id", &up]);
    let event = h.request(&args, &up).await;
    assert_eq!(event.ty, "tenant.onboarded", "{event:?}");
    let steps: Vec<String> = h
        .events_of(&up)
        .await
        .iter()
        .filter_map(|e| match &e.data {
            onboarding_contract::events::EventData::Step(s) if s.phase == "removal" => {
                Some(s.step.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(steps, ["workload"], "the update removed the workload alone");
    let out = h
        .producer(&["verify", &tenant], Duration::from_secs(180))
        .await;
    assert_eq!(out.code, Some(0), "verify after the update: {}", out.stdout);

    let (code, again) = plan(&h, &update).await;
    assert_eq!(code, Some(0), "{again}");
    assert_eq!(
        actions(&again),
        vec![],
        "after the update nothing is left to do: {again:#}"
    );
    assert!(
        again["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["action"] == "unchanged"),
        "{again:#}"
    );

    // An offboarding: every resource of the worker's removed, the container kept.
    let (code, off) = plan(&h, &["offboard", "--tenant", &tenant]).await;
    assert_eq!(code, Some(0), "{off}");
    let verbs: Vec<(String, String)> = off["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().into(),
                i["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        verbs.contains(&("blob_container".into(), "keep".into())),
        "{verbs:?}"
    );
    assert!(
        verbs.contains(&("node_pool".into(), "remove".into())),
        "{verbs:?}"
    );
    assert!(
        verbs.contains(&("namespace".into(), "remove".into())),
        "{verbs:?}"
    );
    assert!(
        !verbs.iter().any(|(n, _)| n == "workload"),
        "no Deployment is left: {verbs:?}"
    );
    let (code, _) = plan(&h, &["offboard", "--tenant", &tenant, "--purge-data"]).await;
    assert_eq!(code, Some(0));

    let (code, _) = plan(&h, &["offboard", "--tenant", "nobody-here"]).await;
    assert_eq!(code, Some(4), "an offboarding of a tenant with nothing");
    let (code, _) = plan(&h, &["send", "--tenant", "Not_A_Tenant"]).await;
    assert_eq!(code, Some(2), "an invalid request");
}
