//! The gear-hash scan kernel: four lanes of the Xet gear hash over equally spaced ranges.
//!
//! Each lane is one serial chain `h = 2h + GEAR[byte]`. Four chains run side by side so one core
//! keeps its load ports busy; the scan is bound by two loads per byte (the byte and its table
//! entry). On x86-64 the loop is written in assembly: compilers keep the 2^48 limit out of a
//! register, test the lanes with extra ORs and branch once per step, which measured 20-30 % slower.
//! A position is a hit when `h < 2^48` (that is, `h & MASK == 0`); hits are about one in 65,536
//! positions, so the loop leaves on a hit and the caller records it.

use crate::chunker::{GEAR, MASK};

/// `h & MASK == 0` exactly when `h < LIMIT` (MASK is the top 16 bits).
const LIMIT: u64 = !MASK + 1;
const _: () = assert!(MASK == 0xFFFF_0000_0000_0000);

/// One gear step.
#[inline(always)]
pub fn step(h: u64, b: u8) -> u64 {
    (h << 1).wrapping_add(GEAR[b as usize])
}

/// Runs four lanes over `data[start + k*stride ..][..len]` for k in 0..4, carrying their hashes in
/// `h`, and calls `hit(k, t)` for each step `t` where lane k's hash is a hit, in order of `t`.
///
/// Panics unless `start + 3*stride + len <= data.len()`.
pub fn scan4(
    data: &[u8],
    start: usize,
    stride: usize,
    len: usize,
    h: &mut [u64; 4],
    hit: &mut dyn FnMut(usize, usize),
) {
    assert!(
        start + 3 * stride + len <= data.len(),
        "gear lanes out of bounds"
    );
    let mut t = 0;
    loop {
        t = fast(data, start, stride, len, t, h);
        if t == len {
            return;
        }
        for (k, v) in h.iter().enumerate() {
            if *v < LIMIT {
                hit(k, t);
            }
        }
        t += 1;
    }
}

/// One step of all four lanes at byte offset `$k` from `q`, then leave for label `$exit` if any lane
/// hits. Lanes 0-2 address through q and the stride, lane 3 through q3 (x86 scales stop at 8).
#[cfg(target_arch = "x86_64")]
macro_rules! sub_step {
    ($k:literal, $exit:literal) => {
        concat!(
            "movzx {t0:e}, byte ptr [{q} + ",
            $k,
            "]\n",
            "mov {t0}, qword ptr [{tab} + {t0}*8]\n",
            "lea {h0}, [{t0} + {h0}*2]\n",
            "movzx {t1:e}, byte ptr [{q} + {s} + ",
            $k,
            "]\n",
            "mov {t1}, qword ptr [{tab} + {t1}*8]\n",
            "lea {h1}, [{t1} + {h1}*2]\n",
            "movzx {t0:e}, byte ptr [{q} + {s}*2 + ",
            $k,
            "]\n",
            "mov {t0}, qword ptr [{tab} + {t0}*8]\n",
            "lea {h2}, [{t0} + {h2}*2]\n",
            "movzx {t1:e}, byte ptr [{q3} + ",
            $k,
            "]\n",
            "mov {t1}, qword ptr [{tab} + {t1}*8]\n",
            "lea {h3}, [{t1} + {h3}*2]\n",
            "cmp {h0}, {lim}\n",
            "jb ",
            $exit,
            "f\n",
            "cmp {h1}, {lim}\n",
            "jb ",
            $exit,
            "f\n",
            "cmp {h2}, {lim}\n",
            "jb ",
            $exit,
            "f\n",
            "cmp {h3}, {lim}\n",
            "jb ",
            $exit,
            "f",
        )
    };
}

/// Advances all lanes from step `t` (`h` holds the hashes through step `t - 1`) to the first step
/// at which some lane hits, and returns it (all lanes computed through it), or returns `len`.
#[cfg(target_arch = "x86_64")]
fn fast(data: &[u8], start: usize, stride: usize, len: usize, t: usize, h: &mut [u64; 4]) -> usize {
    let mut t = t;
    if len - t >= 4 {
        let base = data[start..].as_ptr();
        // SAFETY: the loop reads lane bytes at base + k*stride + s for s in t..=last+3 < len, which
        // scan4's assertion keeps inside `data`; GEAR has 256 entries and indices are bytes.
        unsafe {
            let mut q = base.add(t);
            let mut q3 = q.add(3 * stride);
            let qlast = base.add(len - 4);
            let [mut h0, mut h1, mut h2, mut h3] = *h;
            std::arch::asm!(
                "2:",
                sub_step!("0", "30"),
                sub_step!("1", "31"),
                sub_step!("2", "32"),
                sub_step!("3", "33"),
                "add {q}, 4",
                "add {q3}, 4",
                "cmp {q}, {qlast}",
                "jbe 2b",
                "jmp 39f",
                // A hit in sub-step k leaves q at the step of the hit.
                "33:",
                "inc {q}",
                "32:",
                "inc {q}",
                "31:",
                "inc {q}",
                "30:",
                "39:",
                q = inout(reg) q,
                q3 = inout(reg) q3,
                s = in(reg) stride,
                tab = in(reg) GEAR.as_ptr(),
                lim = in(reg) LIMIT,
                qlast = in(reg) qlast,
                h0 = inout(reg) h0,
                h1 = inout(reg) h1,
                h2 = inout(reg) h2,
                h3 = inout(reg) h3,
                t0 = out(reg) _,
                t1 = out(reg) _,
                options(nostack, readonly),
            );
            let _ = q3;
            *h = [h0, h1, h2, h3];
            t = q.offset_from(base) as usize;
        }
        // The loop ends either on a hit (q at its step) or with no hit at its last step.
        if h.iter().any(|v| *v < LIMIT) {
            return t;
        }
    }
    portable(data, start, stride, len, t, h)
}

#[cfg(not(target_arch = "x86_64"))]
fn fast(data: &[u8], start: usize, stride: usize, len: usize, t: usize, h: &mut [u64; 4]) -> usize {
    portable(data, start, stride, len, t, h)
}

/// The same loop in plain Rust (other targets and the last few steps).
fn portable(
    data: &[u8],
    start: usize,
    stride: usize,
    len: usize,
    t: usize,
    h: &mut [u64; 4],
) -> usize {
    let lanes: [&[u8]; 4] = core::array::from_fn(|k| &data[start + k * stride..][t..len]);
    let [mut h0, mut h1, mut h2, mut h3] = *h;
    let mut at = len;
    for (i, (((&a, &b), &c), &d)) in lanes[0]
        .iter()
        .zip(lanes[1])
        .zip(lanes[2])
        .zip(lanes[3])
        .enumerate()
    {
        h0 = step(h0, a);
        h1 = step(h1, b);
        h2 = step(h2, c);
        h3 = step(h3, d);
        if (h0 < LIMIT) | (h1 < LIMIT) | (h2 < LIMIT) | (h3 < LIMIT) {
            at = t + i;
            break;
        }
    }
    *h = [h0, h1, h2, h3];
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};

    fn reference(data: &[u8], start: usize, stride: usize, len: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for k in 0..4 {
            let mut h = 0u64;
            for t in 0..len {
                h = step(h, data[start + k * stride + t]);
                if h & MASK == 0 {
                    out.push((t, k));
                }
            }
        }
        out.sort();
        out
    }

    fn scanned(data: &[u8], start: usize, stride: usize, len: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut h = [0u64; 4];
        scan4(data, start, stride, len, &mut h, &mut |k, t| {
            out.push((t, k))
        });
        // Hits come in step order.
        assert!(out.windows(2).all(|w| w[0].0 <= w[1].0));
        out.sort();
        out
    }

    #[test]
    fn lanes_equal_the_definition() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut data = vec![0u8; 4 << 20];
        rng.fill_bytes(&mut data);
        let mut total = 0;
        for _ in 0..30 {
            let start = rng.gen_range(0..1000);
            let len = rng.gen_range(0..(1 << 20));
            let stride = rng.gen_range(len..=len + 1000);
            let want = reference(&data, start, stride, len);
            total += want.len();
            assert_eq!(scanned(&data, start, stride, len), want);
        }
        assert!(total > 50, "the test data must produce hits ({total})");
    }

    #[test]
    fn lanes_hitting_at_the_same_step() {
        // Four identical lanes hit at the same steps, including in the last few (tail) steps.
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let mut lane = vec![0u8; 1 << 20];
        rng.fill_bytes(&mut lane);
        let data = lane.repeat(4);
        let want = reference(&data, 0, lane.len(), lane.len());
        assert!(want.len() >= 40 && want.len().is_multiple_of(4));
        assert_eq!(scanned(&data, 0, lane.len(), lane.len()), want);
        // End the lanes right after a hit, so it falls in the last steps.
        let last = want.last().unwrap().0;
        for extra in 0..6 {
            let len = last + extra;
            assert_eq!(
                scanned(&data, 0, lane.len(), len),
                reference(&data, 0, lane.len(), len)
            );
        }
    }

    #[test]
    fn the_portable_loop_equals_the_definition() {
        // Other targets run only this loop; on x86-64 it runs only the last few steps.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut data = vec![0u8; 4 << 20];
        rng.fill_bytes(&mut data);
        let len = 1 << 20;
        let mut got = Vec::new();
        let (mut h, mut t) = ([0u64; 4], 0);
        loop {
            t = portable(&data, 0, len, len, t, &mut h);
            if t == len {
                break;
            }
            for (k, v) in h.iter().enumerate() {
                if *v < LIMIT {
                    got.push((t, k));
                }
            }
            t += 1;
        }
        got.sort();
        let want = reference(&data, 0, len, len);
        assert!(want.len() > 20);
        assert_eq!(got, want);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn lanes_past_the_end_panic() {
        let data = vec![0u8; 100];
        scan4(&data, 0, 30, 11, &mut [0; 4], &mut |_, _| {});
    }
}
