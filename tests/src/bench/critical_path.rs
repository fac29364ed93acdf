//! Benchmark 1: one onboarding's wall time against the critical path of the step graph.
//!
//! The critical path is computed, not measured: every request the simulators received during the
//! onboarding is attributed to its step (by resource type), weighted with the latency the
//! simulators' profile gives it (an agent pool PUT weighs the whole long-running operation; ARM
//! reads are instant in the simulator), and the longest chain through the worker's own step graph
//! (`onboarding_saga::steps::all()` and each step's `needs()`) is the critical path. The seeds'
//! manual notebook does the same operations one after another: the sum of all weights.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use onboarding_saga::StepName;
use sim::faults::LatencyProfile;

use super::harness::{self, Runtimes};
use super::report::{Block, Figure, Goal};

pub const NAME: &str = "critical-path";
const TITLE: &str = "Critical path";
const GOAL: f64 = 1.10;

/// Time each step spends in the simulators, by the profile.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StepWeights {
    pub by_step: BTreeMap<StepName, Duration>,
    /// Requests that could not be tied to a step (should be none).
    pub unattributed: Vec<String>,
}

fn arm_step(operation: &str) -> Option<StepName> {
    let family = operation.rsplit_once('.').map_or(operation, |(f, _)| f);
    Some(match family {
        "arm.agent_pools" | "arm.operations" => StepName::NodePool,
        "arm.identities" => StepName::Identity,
        "arm.federated_credentials" => StepName::FederatedCredential,
        "arm.blob_containers" => StepName::BlobContainer,
        "arm.role_assignments" => StepName::RoleAssignment,
        _ => return None,
    })
}

fn kube_step(plural: &str) -> Option<StepName> {
    Some(match plural {
        "namespaces" => StepName::Namespace,
        "serviceaccounts" => StepName::ServiceAccount,
        "resourcequotas" | "limitranges" | "networkpolicies" | "roles" | "rolebindings" => {
            StepName::Guardrails
        }
        "deployments" => StepName::Workload,
        _ => return None,
    })
}

/// The simulator's operation name of a Kubernetes API request (`kube.<plural>.<verb>`), or
/// `None` for discovery, which the simulator answers without latency.
pub fn kube_operation(method: &str, path: &str) -> Option<(String, String)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segs.first() {
        Some(&"api") if segs.len() > 2 => &segs[2..],
        Some(&"apis") if segs.len() > 3 => &segs[3..],
        _ => return None,
    };
    let (plural, object) = match rest {
        ["namespaces"] => ("namespaces", false),
        ["namespaces", _] => ("namespaces", true),
        ["namespaces", _, plural] => (*plural, false),
        ["namespaces", _, plural, _, ..] => (*plural, true),
        [plural] => (*plural, false),
        [plural, _, ..] => (*plural, true),
        [] => return None,
    };
    let verb = match (method, object) {
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("PATCH", _) => "apply",
        ("DELETE", _) => "delete",
        _ => "other",
    };
    Some((plural.to_string(), verb.to_string()))
}

/// Attribute the simulators' request logs to steps and weigh them with `profile`.
pub fn weights(
    profile: &LatencyProfile,
    arm: &[sim::arm::RecordedRequest],
    kube: &[sim::k8s::RecordedRequest],
) -> StepWeights {
    let mut w = StepWeights::default();
    for r in arm {
        let Some(step) = arm_step(&r.operation) else {
            w.unattributed.push(format!("{} {}", r.method, r.path));
            continue;
        };
        let cost = match (
            r.operation.starts_with("arm.agent_pools."),
            r.method.as_str(),
        ) {
            // The pool's PUT starts an operation that takes the whole creation time.
            (true, "PUT") => profile.latency("arm.agent_pools.create"),
            (true, "DELETE") => profile.latency("arm.agent_pools.delete"),
            (false, "PUT" | "DELETE") => profile.latency(&r.operation),
            // ARM reads (and operation polls) answer at once in the simulator.
            _ => Duration::ZERO,
        };
        *w.by_step.entry(step).or_default() += cost;
    }
    for r in kube {
        let Some((plural, verb)) = kube_operation(&r.method, &r.path) else {
            continue;
        };
        match kube_step(&plural) {
            Some(step) => {
                *w.by_step.entry(step).or_default() +=
                    profile.latency(&format!("kube.{plural}.{verb}"));
            }
            None => w.unattributed.push(format!("{} {}", r.method, r.path)),
        }
    }
    w
}

/// The longest chain of dependent steps and its length.
pub fn critical_path(w: &StepWeights) -> (Duration, Vec<StepName>) {
    let steps = onboarding_saga::steps::all();
    let needs: BTreeMap<StepName, Vec<StepName>> = steps
        .iter()
        .map(|s| (s.name(), s.needs().to_vec()))
        .collect();
    let mut finish: BTreeMap<StepName, (Duration, Vec<StepName>)> = BTreeMap::new();
    // The graph is acyclic (a worker unit test checks it): relax until every step is placed.
    while finish.len() < needs.len() {
        let before = finish.len();
        for (step, deps) in &needs {
            if finish.contains_key(step) || !deps.iter().all(|d| finish.contains_key(d)) {
                continue;
            }
            let (start, mut chain) = deps
                .iter()
                .filter_map(|d| finish.get(d).cloned())
                .max_by_key(|(t, _)| *t)
                .unwrap_or_default();
            chain.push(*step);
            let own = w.by_step.get(step).copied().unwrap_or_default();
            finish.insert(*step, (start + own, chain));
        }
        if finish.len() == before {
            break;
        }
    }
    finish
        .into_values()
        .max_by_key(|(t, _)| *t)
        .unwrap_or_default()
}

/// The manual notebook: every operation one after the other.
pub fn sequential(w: &StepWeights) -> Duration {
    w.by_step.values().sum()
}

struct Measured {
    wall: Duration,
    critical: Duration,
    chain: Vec<StepName>,
    sequential: Duration,
    steps_done: Vec<(String, Duration)>,
    unattributed: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn measure(rts: &Runtimes, scale: f64, runs: usize) -> Result<Vec<Measured>> {
    let profile = LatencyProfile::realistic(scale);
    let sims = harness::start_sims(
        rts,
        sim::SimOptions {
            latency: profile.clone(),
            ..sim::SimOptions::default()
        },
    )?;
    let dir = tempfile::tempdir()?;
    let mut config = harness::bench_config(dir.path(), &sims)?;
    // The saga holding its cluster's turn looks at the pool operation every
    // cluster_turn_poll_ms, scaled like the simulator's time (5 s at real time).
    config.saga.cluster_turn_poll_ms = ((5_000.0 * scale) as u64).max(1);
    rts.work.block_on(async {
        let built =
            harness::build_context(config, onboarding_azure::ArmClientOptions::default()).await?;
        let cx = built.cx.clone();
        let mut events = cx.topic.subscribe("bench-critical-path").await?;
        let running = harness::RunningWorker::start(cx.clone());
        let mut out = Vec::new();
        let limit = Duration::from_secs(60) + profile.latency("arm.agent_pools.create") * 3;
        for i in 0..runs {
            sims.arm.reset();
            sims.kube.reset();
            let tenant = format!("cp{}-{i}", (scale * 1000.0).round() as u64);
            let msg = harness::onboard_message(&tenant, &harness::request_id("cp"));
            let start = Instant::now();
            cx.queue.send(msg).await?;
            let mut steps_done = Vec::new();
            let wall = loop {
                let left = limit.saturating_sub(start.elapsed());
                if left.is_zero() {
                    return Err(anyhow!(
                        "tenant {tenant} was not onboarded within {limit:?}"
                    ));
                }
                let Some(ev) = events.next(left).await? else {
                    continue;
                };
                let at = start.elapsed();
                let v: serde_json::Value = serde_json::from_slice(&ev.body)?;
                if v["subject"] != tenant.as_str() {
                    continue;
                }
                match v["type"].as_str().unwrap_or_default() {
                    "tenant.step_completed" => {
                        steps_done.push((v["data"]["step"].as_str().unwrap_or("?").to_string(), at))
                    }
                    "tenant.onboarded" => break at,
                    other => {
                        return Err(anyhow!(
                            "tenant {tenant}: unexpected outcome {other}: {}",
                            v["data"]
                        ));
                    }
                }
            };
            let w = weights(
                &profile,
                &sims.arm.recorded_requests(),
                &sims.kube.requests(),
            );
            let (critical, chain) = critical_path(&w);
            out.push(Measured {
                wall,
                critical,
                chain,
                sequential: sequential(&w),
                steps_done,
                unattributed: w.unattributed.len(),
            });
        }
        running.stop().await?;
        Ok(out)
    })
}

pub fn run(rts: &Runtimes, quick: bool) -> Result<Block> {
    // 0.01 is the local run's scale; at 0.06 the node pool takes 14.4 s, long enough for the
    // one-second resolution of Retry-After to matter less (see the notes).
    let plan: &[(f64, usize)] = if quick {
        &[(0.01, 3), (0.06, 1)]
    } else {
        &[(0.01, 5), (0.06, 3)]
    };
    let mut block = Block::new(
        NAME,
        TITLE,
        format!(
            "One onboarding (all 9 steps, with workload) at a time through the in-process worker \
             (embedded default: SQLite queue and journal, concurrency 16) against simulators with \
             `LatencyProfile::realistic(scale)`; runs per scale: {}. Wall time = send → \
             `tenant.onboarded` received. Median of the runs.",
            plan.iter()
                .map(|(s, n)| format!("{s} → {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    for &(scale, runs) in plan {
        let m = measure(rts, scale, runs)?;
        let ratio = harness::median(
            &m.iter()
                .map(|x| x.wall.as_secs_f64() / x.critical.as_secs_f64())
                .collect::<Vec<_>>(),
        );
        let manual = harness::median(
            &m.iter()
                .map(|x| x.sequential.as_secs_f64() / x.critical.as_secs_f64())
                .collect::<Vec<_>>(),
        );
        let wall = harness::median(&m.iter().map(|x| ms(x.wall)).collect::<Vec<_>>());
        let Some(first) = m.first() else {
            continue;
        };
        block.push(
            Figure::new(
                format!("worker wall / critical path (×{scale})"),
                ratio,
                "",
                3,
            )
            .goal(Goal::AtMost(GOAL)),
        );
        block.push(Figure::new(
            format!("manual order / critical path (×{scale})"),
            manual,
            "",
            3,
        ));
        block.push(Figure::new(
            format!("worker wall time (×{scale})"),
            wall,
            "ms",
            0,
        ));
        block.push(Figure::new(
            format!("critical path (×{scale})"),
            ms(first.critical),
            "ms",
            0,
        ));
        block.push(Figure::new(
            format!("manual order, sum of all operations (×{scale})"),
            ms(first.sequential),
            "ms",
            0,
        ));
        let chain = first
            .chain
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" → ");
        let pool = LatencyProfile::realistic(scale).latency("arm.agent_pools.create");
        let median_run = m
            .iter()
            .min_by(|a, b| {
                (ms(a.wall) - wall)
                    .abs()
                    .total_cmp(&(ms(b.wall) - wall).abs())
            })
            .unwrap_or(first);
        let done = median_run
            .steps_done
            .iter()
            .map(|(s, t)| format!("{s} {:.0}", ms(*t)))
            .collect::<Vec<_>>()
            .join(", ");
        block.note(format!(
            "×{scale}: critical chain {chain}; the node pool operation takes {:.0} ms and the \
             simulator's first Retry-After is {} s. Steps completed at (ms after send): {done}.",
            ms(pool),
            (pool.as_secs_f64().ceil() as u64).min(15),
        ));
        // The saga holding the cluster's turn looks at its pool operation every
        // cluster_turn_poll_ms (5 s at real time, scaled), sooner than ARM's whole-second
        // Retry-After: it learns the pool is ready within one such poll.
        let poll_ms = (5_000.0 * scale).max(1.0);
        block.note(format!(
            "×{scale}: the worker learns that the pool is ready at its next look, every \
             {poll_ms:.0} ms (saga.cluster_turn_poll_ms scaled like the simulator; ARM's \
             Retry-After alone would say {:.0} s for a {:.1} s operation). The rest of the gap \
             is the worker's own: receive, journal writes, the first steps, the workload.",
            (pool.as_secs_f64().ceil()).min(15.0),
            pool.as_secs_f64(),
        ));
        if m.iter().any(|x| x.unattributed > 0) {
            block.note(format!(
                "×{scale}: {} simulator requests could not be tied to a step",
                m.iter().map(|x| x.unattributed).sum::<usize>()
            ));
        }
    }
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_paths_name_their_resource_and_discovery_names_none() {
        let op = |m, p| kube_operation(m, p).map(|(a, b)| format!("{a}.{b}"));
        assert_eq!(
            op("PATCH", "/api/v1/namespaces/t-a"),
            Some("namespaces.apply".into())
        );
        assert_eq!(
            op("GET", "/apis/apps/v1/namespaces/t-a/deployments/web"),
            Some("deployments.get".into())
        );
        assert_eq!(
            op(
                "GET",
                "/apis/networking.k8s.io/v1/namespaces/t-a/networkpolicies"
            ),
            Some("networkpolicies.list".into())
        );
        assert_eq!(op("GET", "/api/v1"), None);
        assert_eq!(op("GET", "/apis/apps/v1"), None);
        assert_eq!(op("GET", "/version"), None);
    }

    #[test]
    fn the_critical_path_follows_the_heaviest_chain_of_needs() {
        let mut w = StepWeights::default();
        let d = Duration::from_millis;
        w.by_step.insert(StepName::NodePool, d(2400));
        w.by_step.insert(StepName::Identity, d(30));
        w.by_step.insert(StepName::BlobContainer, d(15));
        w.by_step.insert(StepName::RoleAssignment, d(25));
        w.by_step.insert(StepName::FederatedCredential, d(20));
        w.by_step.insert(StepName::Workload, d(1));
        let (cp, chain) = critical_path(&w);
        assert_eq!(cp, d(2401));
        assert_eq!(chain, vec![StepName::NodePool, StepName::Workload]);
        assert_eq!(sequential(&w), d(2491));
        w.by_step.insert(StepName::Identity, d(3000));
        let (cp, chain) = critical_path(&w);
        assert_eq!(cp, d(3026));
        assert_eq!(
            chain,
            vec![
                StepName::Identity,
                StepName::RoleAssignment,
                StepName::Workload
            ]
        );
    }

    #[test]
    fn an_agent_pool_put_weighs_the_whole_operation_and_reads_weigh_nothing() {
        let profile = LatencyProfile::realistic(0.01);
        let arm = |method: &str, operation: &str| sim::arm::RecordedRequest {
            method: method.into(),
            path: String::new(),
            operation: operation.into(),
            body: None,
        };
        let w = weights(
            &profile,
            &[
                arm("GET", "arm.agent_pools.get"),
                arm("PUT", "arm.agent_pools.put"),
                arm("GET", "arm.operations.get"),
                arm("PUT", "arm.identities.put"),
            ],
            &[],
        );
        assert_eq!(w.by_step[&StepName::NodePool], Duration::from_millis(2400));
        assert_eq!(w.by_step[&StepName::Identity], Duration::from_millis(30));
        assert!(w.unattributed.is_empty());
    }
}
