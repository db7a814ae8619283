//! Running a program on a crafted packet with `BPF_PROG_TEST_RUN`: nothing is attached and the
//! packet goes nowhere. The kernel gives the skb the loopback device, so tests register their
//! endpoint under ifindex 1.

use aya::programs::{TestRun as _, TestRunOptions};

use super::{attach::Hook, Dataplane, DataplaneError};

/// What the program returned and how long it took per run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The TC action (`TC_ACT_OK` = 0, `TC_ACT_SHOT` = 2).
    pub action: u32,
    /// The skb mark after the run.
    pub mark: u32,
    /// Average duration per repetition, in nanoseconds.
    pub ns_per_run: u64,
}

/// Size of `struct __sk_buff` in this kernel ABI, and the offsets of `mark` and `ifindex` in it.
const SKB_CTX_LEN: usize = 192;
const SKB_MARK_OFFSET: usize = 8;
const SKB_IFINDEX_OFFSET: usize = 40;

impl Dataplane {
    /// Runs `hook`'s program `repeat` times on `packet` (an Ethernet frame) with `mark` set, as
    /// if on the loopback device (ifindex 1).
    pub fn test_run(
        &mut self,
        hook: Hook,
        packet: &[u8],
        mark: u32,
        repeat: u32,
    ) -> Result<TestRunOutcome, DataplaneError> {
        self.test_run_on(hook, packet, mark, 0, repeat)
    }

    /// [`Dataplane::test_run`] as if on the interface `ifindex` of the current network namespace
    /// (0: loopback). Nothing is attached to that interface and the packet is not delivered.
    pub fn test_run_on(
        &mut self,
        hook: Hook,
        packet: &[u8],
        mark: u32,
        ifindex: u32,
        repeat: u32,
    ) -> Result<TestRunOutcome, DataplaneError> {
        let name = hook.program_name();
        let prog = self.program(hook)?;
        let mut ctx_in = [0u8; SKB_CTX_LEN];
        ctx_in[SKB_MARK_OFFSET..SKB_MARK_OFFSET + 4].copy_from_slice(&mark.to_ne_bytes());
        ctx_in[SKB_IFINDEX_OFFSET..SKB_IFINDEX_OFFSET + 4].copy_from_slice(&ifindex.to_ne_bytes());
        let mut ctx_out = [0u8; SKB_CTX_LEN];
        let mut data_out = vec![0u8; packet.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(packet);
        opts.data_out = Some(&mut data_out);
        opts.ctx_in = Some(&ctx_in);
        opts.ctx_out = Some(&mut ctx_out);
        opts.repeat = repeat.max(1);
        let result = prog
            .test_run(opts)
            .map_err(|source| DataplaneError::Program { name, source })?;
        let mut mark_bytes = [0u8; 4];
        mark_bytes.copy_from_slice(&ctx_out[SKB_MARK_OFFSET..SKB_MARK_OFFSET + 4]);
        Ok(TestRunOutcome {
            action: result.return_value,
            mark: u32::from_ne_bytes(mark_bytes),
            ns_per_run: u64::try_from(result.duration.as_nanos()).unwrap_or(u64::MAX),
        })
    }
}
