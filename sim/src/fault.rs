//! Faults: what the nemesis can do to a process, its disk, its network or its bucket. A
//! scenario's row lists the faults it draws from ([`crate::scenario::Spec`]).

use std::sync::atomic::Ordering;
use std::time::Duration;

use madsim::rand::{thread_rng, Rng};
use madsim::runtime::Handle;
use madsim::task::NodeId;
use madsim::time::sleep;
use t4::env::{CrashMode, SimDiskFaults};

use crate::world::World;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Kill the process; its disk loses every unsynced write.
    CrashLoseUnsynced,
    /// Kill the process; unsynced writes are torn (whole, none, or a prefix, in any order).
    CrashTorn,
    /// Power fails inside one of the next few fsyncs (after the write, before it is durable).
    CrashMidCommit,
    /// An fsync fails with EIO: the node must stop acknowledging; then it is restarted.
    FsyncEio,
    /// Kill the process and lose its whole disk.
    DiskWipe,
    /// Restart the process (with a clean shutdown or losing unsynced writes): it takes a new
    /// term and fences the other processes on its prefix.
    Restart,
    /// The disk fills up within 64 KiB; once the node stops, space is freed and it restarts.
    DiskFull,
    /// While the process is down, bits flip or blocks land at another block's place.
    DiskOutOfContract,
    /// A link between a client and the node is cut, one way or both, for 0.1-0.8 s.
    PartitionClientNode,
    /// The node cannot reach the bucket for 0.1-1.5 s.
    PartitionNodeS3,
    /// The node's wall clock steps by up to an hour either way, or strobes (monotonic time
    /// does not move).
    WallClockStep,
    /// Cluster worlds: a member is killed and restarted 0.2-2.5 s later.
    MemberKill,
    /// ... a member is paused (SIGSTOP) for 0.2-2.5 s, past its lease, then resumed.
    MemberPause,
    /// ... a member cannot reach the bucket for 0.2-2.5 s.
    MemberCutFromBucket,
    /// ... no majority hears a member for 0.2-2.5 s (a holder then stops renewing).
    MemberUnheard,
    /// Replicated worlds: the peer links between the member and one other (or all others)
    /// are cut, one way or both, for 0.1-1.5 s.
    PartitionPeers,
}

impl Fault {
    /// One fault of `choices`, by weight; None when there are none (no draw either). The
    /// draws are the ones the scenarios made before they were rows of a table (an index for
    /// equal weights, one 32-bit draw for unequal ones, none for a single choice), so every
    /// seed, the regression list's among them, replays the path it did.
    pub fn pick(choices: &[(Fault, u32)]) -> Option<Fault> {
        match choices {
            [] => None,
            [(only, _)] => Some(*only),
            _ if choices.iter().all(|(_, weight)| *weight == choices[0].1) => Some(choices[thread_rng().gen_range(0..choices.len())].0),
            _ => {
                let total: u32 = choices.iter().map(|(_, weight)| weight).sum();
                let mut draw = thread_rng().gen_range(0..total);
                for (fault, weight) in choices {
                    if draw < *weight {
                        return Some(*fault);
                    }
                    draw -= weight;
                }
                unreachable!("the draw is below the total weight")
            }
        }
    }
}

impl World {
    /// Injects `fault` on process `which` (its madsim node `server`).
    pub(crate) async fn inject(&self, handle: &Handle, which: usize, server: NodeId, fault: Fault) {
        let process = &self.processes[which];
        let torn = CrashMode::Torn { seed: thread_rng().gen() };
        match fault {
            Fault::CrashLoseUnsynced => self.restart(handle, process, server, Some(CrashMode::LoseUnsynced)),
            Fault::CrashTorn => self.restart(handle, process, server, Some(torn)),
            Fault::DiskWipe => {
                // A cluster loses nothing to a minority of voters losing their disks, one
                // at a time: never the only voter's (that is all of them).
                if self.spec.replicated && self.voters().await < 2 {
                    self.fold("disk wipe skipped: fewer than two voters");
                    return;
                }
                self.restart(handle, process, server, Some(CrashMode::Wipe))
            }
            Fault::CrashMidCommit => {
                let after = thread_rng().gen_range(0..4);
                self.fold(&format!("crash on sync #{after}"));
                process.disk.set_faults(SimDiskFaults { crash_on_sync: Some((after, torn)), ..Default::default() });
                self.await_failure(process).await;
                process.disk.set_faults(SimDiskFaults::default());
                // The disk already lost power; the process dies with it.
                self.restart(handle, process, server, None);
            }
            Fault::FsyncEio => {
                self.fold("fsync eio");
                process.disk.set_faults(SimDiskFaults { sync_failures: 1, ..Default::default() });
                self.await_failure(process).await;
                process.disk.set_faults(SimDiskFaults::default());
                self.restart(handle, process, server, None);
            }
            Fault::Restart => {
                // Restarting one process takes a new term: it fences the other, which must
                // stop acknowledging (until the nemesis restarts it in turn).
                let crash = [None, Some(CrashMode::LoseUnsynced)][thread_rng().gen_range(0..2)];
                self.restart(handle, process, server, crash);
            }
            Fault::DiskFull => {
                let headroom = thread_rng().gen_range(0..64 * 1024);
                self.fold(&format!("disk full in {headroom} bytes"));
                process.disk.set_faults(SimDiskFaults { capacity_bytes: Some(process.disk.used() + headroom), ..Default::default() });
                self.await_failure(process).await;
                // Space is freed; the operator restarts the node.
                process.disk.set_faults(SimDiskFaults::default());
                self.restart(handle, process, server, None);
            }
            Fault::DiskOutOfContract => {
                self.kill(handle, process, server);
                let files: Vec<(String, u64)> = process
                    .disk
                    .paths()
                    .into_iter()
                    .filter_map(|path| process.disk.file_len(&path).map(|len| (path, len)))
                    .filter(|(_, len)| *len > 0)
                    .collect();
                for _ in 0..thread_rng().gen_range(1..=3) {
                    if files.is_empty() {
                        break;
                    }
                    let (path, len) = &files[thread_rng().gen_range(0..files.len())];
                    // Only durable bytes can change; a file longer than its durable image
                    // refuses.
                    if thread_rng().gen_range(0..2) == 0 {
                        let (offset, bit) = (thread_rng().gen_range(0..*len), thread_rng().gen_range(0..8u8));
                        if process.disk.flip_bit(path, offset, bit).is_ok() {
                            self.fold(&format!("flipped bit {bit} of byte {offset} of {path}"));
                        }
                    } else {
                        // A sector (or a page, in a larger file) lands at another one's place.
                        let block: u64 = if *len >= 64 * 1024 { 4096 } else { 512 };
                        let blocks = len / block;
                        if blocks < 2 {
                            continue;
                        }
                        let (from, to) = (thread_rng().gen_range(0..blocks), thread_rng().gen_range(0..blocks));
                        if from != to && process.disk.misdirect(path, from * block, to * block, block).is_ok() {
                            self.fold(&format!("block {from} of {path} also written at block {to} ({block} bytes)"));
                        }
                    }
                }
                let refused = self.detected.lock().unwrap().len();
                self.restart(handle, process, server, None);
                for _ in 0..100 {
                    if process.slot.lock().unwrap().is_some() {
                        return;
                    }
                    if self.detected.lock().unwrap().len() > refused {
                        // Refused to open: damage detected. The operator wipes the disk.
                        self.fold("damage detected; the disk is wiped");
                        self.restart(handle, process, server, Some(CrashMode::Wipe));
                        return;
                    }
                    sleep(Duration::from_millis(10)).await;
                }
            }
            Fault::PartitionClientNode => {
                let clients = self.client_nodes.lock().unwrap().clone();
                let client = clients[thread_rng().gen_range(0..clients.len())];
                let way = thread_rng().gen_range(0..3);
                let net = madsim::net::NetSim::current();
                let (to_node, to_client) = (way != 1, way != 2);
                self.fold(&format!("cut client {client} -> node {to_node}, node -> client {to_client}"));
                if to_node {
                    net.clog_link(client, server);
                }
                if to_client {
                    net.clog_link(server, client);
                }
                sleep(Duration::from_millis(thread_rng().gen_range(100..800))).await;
                net.unclog_link(client, server);
                net.unclog_link(server, client);
            }
            Fault::PartitionNodeS3 => {
                let bucket = self.bucket.as_ref().expect("partition_node_s3 uses a bucket");
                let cut = Duration::from_millis(thread_rng().gen_range(100..1500));
                self.fold(&format!("bucket unreachable for {cut:?}"));
                bucket.set_unreachable(true);
                sleep(cut).await;
                bucket.set_unreachable(false);
            }
            Fault::WallClockStep => {
                // An NTP step or an operator: the wall clock moves, monotonic time does not.
                // Or it strobes: a confused time source steps it back and forth.
                let clock = process.clock.lock().unwrap().clone();
                let Some(clock) = clock else { return };
                let step_ms = thread_rng().gen_range(-3_600_000..=3_600_000);
                if thread_rng().gen_range(0..3) > 0 {
                    self.fold(&format!("wall clock step {step_ms} ms"));
                    clock.jump_wall(step_ms);
                    return;
                }
                self.fold(&format!("wall clock strobes by {step_ms} ms"));
                for _ in 0..10 {
                    clock.jump_wall(step_ms);
                    sleep(Duration::from_millis(thread_rng().gen_range(1..20))).await;
                    clock.jump_wall(-step_ms);
                    sleep(Duration::from_millis(thread_rng().gen_range(1..20))).await;
                }
            }
            Fault::MemberPause => {
                // SIGSTOP past the lease, then SIGCONT: the member must neither acknowledge
                // nor serve a stale read when it wakes.
                let paused = Duration::from_millis(thread_rng().gen_range(200..2500));
                self.fold(&format!("pause {} for {paused:?}", process.name));
                process.paused.send_replace(true);
                handle.pause(server);
                sleep(paused).await;
                handle.resume(server);
                process.paused.send_replace(false);
            }
            Fault::PartitionPeers => {
                let servers = self.servers.lock().unwrap().clone();
                let others: Vec<NodeId> = servers.iter().copied().filter(|other| *other != server).collect();
                // The leader is cut from every other member (an isolated leader), any
                // other member from all or one of them.
                let leader = self.leader_index() == Some(which);
                let cut: Vec<NodeId> = if leader || thread_rng().gen_range(0..2) == 0 {
                    others.clone()
                } else {
                    vec![others[thread_rng().gen_range(0..others.len())]]
                };
                let way = thread_rng().gen_range(0..3);
                let (out, back) = (way != 1, way != 2);
                self.fold(&format!("cut {} from {} peers: out {out}, back {back}", process.name, cut.len()));
                let net = madsim::net::NetSim::current();
                for other in &cut {
                    if out {
                        net.clog_link(server, *other);
                    }
                    if back {
                        net.clog_link(*other, server);
                    }
                }
                sleep(Duration::from_millis(thread_rng().gen_range(100..1500))).await;
                for other in &cut {
                    net.unclog_link(server, *other);
                    net.unclog_link(*other, server);
                }
            }
            Fault::MemberCutFromBucket => {
                // A member loses its own link to S3; a leader half the time loses its peers
                // too (isolated but for its clients: it must stop acknowledging and serving
                // reads once its lease runs out, by its clock alone).
                let span = Duration::from_millis(thread_rng().gen_range(200..2500));
                let isolated = self.leader_index() == Some(which) && thread_rng().gen_range(0..2) == 0;
                let servers = self.servers.lock().unwrap().clone();
                let others: Vec<NodeId> =
                    if isolated { servers.iter().copied().filter(|other| *other != server).collect() } else { Vec::new() };
                self.fold(&format!("cut {} from the bucket for {span:?}, from its peers {isolated}", process.name));
                let net = madsim::net::NetSim::current();
                for other in &others {
                    net.clog_link(server, *other);
                    net.clog_link(*other, server);
                }
                process.bucket_cut.store(true, Ordering::SeqCst);
                sleep(span).await;
                process.bucket_cut.store(false, Ordering::SeqCst);
                for other in &others {
                    net.unclog_link(server, *other);
                    net.unclog_link(*other, server);
                }
            }
            Fault::MemberKill | Fault::MemberUnheard => {
                unreachable!("{fault:?} is a cluster world's fault (crate::cluster)")
            }
        }
    }
}
