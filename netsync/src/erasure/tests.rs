//! Property-style tests: every k-subset for small schemes, random erasures for 4/8 and
//! 10/16, corruption, garbage headers, byte-exact rebuilds, share maps.

use super::share::{FIXED_HEADER_LEN, PACK_ENTRY_LEN};
use super::*;
use pluto_repo::pack::PackId;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
    /// `k` distinct indexes of `0..n`, in random order.
    fn subset(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k {
            let j = i + self.below(n - i);
            all.swap(i, j);
        }
        all.truncate(k);
        all
    }
}

fn named(shares: &[Share], which: &[usize]) -> Vec<(ShareId, Vec<u8>)> {
    which
        .iter()
        .map(|&i| (shares[i].id(), shares[i].as_bytes().to_vec()))
        .collect()
}

fn p(k: u8, n: u8) -> Params {
    Params::new(k, n).unwrap()
}

/// All k-subsets of 0..n.
fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for mask in 0u32..(1 << n) {
        if mask.count_ones() as usize == k {
            out.push((0..n).filter(|i| mask & (1 << i) != 0).collect());
        }
    }
    out
}

#[test]
fn every_k_subset_restores_small_schemes() {
    let mut rng = Rng(7);
    for (k, n) in [
        (1u8, 2u8),
        (1, 3),
        (2, 3),
        (2, 4),
        (3, 5),
        (4, 6),
        (4, 8),
        (5, 7),
    ] {
        // Lengths that divide evenly, odd ones, and one shorter than k.
        for len in [1usize, 3, 64, 1000, 4097, 70_001] {
            let pack = rng.bytes(len);
            let shares = encode(p(k, n), &[&pack]).unwrap();
            assert_eq!(shares.len(), usize::from(n));
            for (i, s) in shares.iter().enumerate() {
                assert_eq!(s.index() as usize, i);
                assert_eq!(s.id(), ShareId::of_bytes(s.as_bytes()));
            }
            for sub in subsets(n as usize, k as usize) {
                let restored = decode(named(&shares, &sub)).unwrap();
                assert_eq!(restored.len(), 1);
                assert_eq!(restored[0].bytes, pack, "{k}/{n} len {len} subset {sub:?}");
                assert_eq!(restored[0].id, PackId::of_bytes(&pack));
            }
        }
    }
}

#[test]
fn fewer_than_k_shares_is_an_error() {
    let mut rng = Rng(8);
    let pack = rng.bytes(10_000);
    let shares = encode(p(4, 8), &[&pack]).unwrap();
    for sub in subsets(8, 3) {
        match decode(named(&shares, &sub)) {
            Err(ErasureError::NotEnoughShares {
                have: 3, need: 4, ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        decode(Vec::new()),
        Err(ErasureError::NotEnoughShares { have: 0, .. })
    ));
}

#[test]
fn random_erasures_4_8_and_10_16_with_groups() {
    let mut rng = Rng(9);
    for (k, n) in [(4u8, 8u8), (10, 16)] {
        for round in 0..12 {
            let count = 1 + rng.below(4);
            let packs: Vec<Vec<u8>> = (0..count)
                .map(|_| {
                    let len = 1 + rng.below(300_000);
                    rng.bytes(len)
                })
                .collect();
            let refs: Vec<&[u8]> = packs.iter().map(|v| v.as_slice()).collect();
            let shares = encode(p(k, n), &refs).unwrap();
            // Lose up to n - k shares at random; hand the rest over in random order.
            let keep = usize::from(k) + rng.below(usize::from(n - k) + 1);
            let sub = rng.subset(usize::from(n), keep);
            let restored = decode(named(&shares, &sub)).unwrap();
            assert_eq!(restored.len(), packs.len());
            for (r, orig) in restored.iter().zip(&packs) {
                assert_eq!(&r.bytes, orig, "{k}/{n} round {round}");
            }
            // Every lost share rebuilds byte for byte from exactly k others.
            let lost: Vec<usize> = (0..usize::from(n)).filter(|i| !sub.contains(i)).collect();
            for &l in &lost {
                let from: Vec<usize> = rng
                    .subset(sub.len(), usize::from(k))
                    .into_iter()
                    .map(|j| sub[j])
                    .collect();
                let rebuilt = rebuild_share(named(&shares, &from), l as u8).unwrap();
                assert_eq!(
                    rebuilt.as_bytes(),
                    shares[l].as_bytes(),
                    "{k}/{n} rebuild {l} from {from:?}"
                );
                assert_eq!(rebuilt.id(), shares[l].id());
            }
        }
    }
}

#[test]
fn encoding_is_deterministic_and_systematic() {
    let mut rng = Rng(10);
    let a = rng.bytes(5000);
    let b = rng.bytes(77);
    let s1 = encode(p(4, 8), &[&a, &b]).unwrap();
    let s2 = encode(p(4, 8), &[&a, &b]).unwrap();
    assert_eq!(s1, s2);
    // Data shards hold the packs' bytes verbatim.
    let mut data = Vec::new();
    for s in &s1[..4] {
        data.extend_from_slice(s.shard());
    }
    assert_eq!(&data[..5000], &a[..]);
    assert_eq!(&data[5000..5077], &b[..]);
    assert!(data[5077..].iter().all(|&x| x == 0));
    // Layout of the header.
    let h = s1[5].as_bytes();
    assert_eq!(&h[..4], b"PLSH");
    assert_eq!(&h[4..8], &[1, 4, 8, 5]);
    assert_eq!(u64::from_le_bytes(h[8..16].try_into().unwrap()), 5077);
    assert_eq!(u64::from_le_bytes(h[16..24].try_into().unwrap()), 1270); // ceil(5077/4)=1270
    assert_eq!(u16::from_le_bytes(h[24..26].try_into().unwrap()), 2);
    assert_eq!(&h[26..58], &PackId::of_bytes(&a).0);
    assert_eq!(s1[5].len(), FIXED_HEADER_LEN + 2 * PACK_ENTRY_LEN + 1270);
    // Striped coding equals whole-shard coding (several stripes, odd tail).
    let big = rng.bytes(4 * (3 * STRIPE + 1234));
    let shares = encode(p(4, 6), &[&big]).unwrap();
    let originals: Vec<&[u8]> = shares[..4].iter().map(|s| s.shard()).collect();
    let whole = reed_solomon_simd::encode(4, 2, &originals).unwrap();
    assert_eq!(shares[4].shard(), &whole[0][..]);
    assert_eq!(shares[5].shard(), &whole[1][..]);
}

#[test]
fn corrupted_share_is_detected_by_name_and_skipped() {
    let mut rng = Rng(11);
    let pack = rng.bytes(100_000);
    let shares = encode(p(4, 8), &[&pack]).unwrap();
    for i in 0..8 {
        let mut bad = shares[i].as_bytes().to_vec();
        let pos = rng.below(bad.len());
        bad[pos] ^= 1 << rng.below(8);
        match Share::verified(shares[i].id(), bad.clone()) {
            Err(ShareError::NameMismatch { expected, .. }) => assert_eq!(expected, shares[i].id()),
            other => panic!("{other:?}"),
        }
        // With the bad one first and k good ones after, decoding still works.
        let mut list = vec![(shares[i].id(), bad.clone())];
        list.extend(named(
            &shares,
            &[(i + 1) % 8, (i + 2) % 8, (i + 3) % 8, (i + 4) % 8],
        ));
        assert_eq!(decode(list).unwrap()[0].bytes, pack);
        // With only k - 1 good ones, the error names the rejected share.
        let mut list = vec![(shares[i].id(), bad)];
        list.extend(named(&shares, &[(i + 1) % 8, (i + 2) % 8, (i + 3) % 8]));
        match decode(list) {
            Err(e @ ErasureError::NotEnoughShares { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("corrupt"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_share_from_another_group_is_refused() {
    let mut rng = Rng(12);
    let a = encode(p(4, 8), &[&rng.bytes(1000)]).unwrap();
    let b = encode(p(4, 8), &[&rng.bytes(1000)]).unwrap();
    let mut d = Decoder::new();
    d.add(a[0].id(), a[0].as_bytes().to_vec()).unwrap();
    assert!(matches!(
        d.add(b[1].id(), b[1].as_bytes().to_vec()),
        Err(ErasureError::WrongGroup { .. })
    ));
    // A decoder from the share map refuses shares it does not name.
    let group = ShareGroup::from_shares(&a).unwrap();
    let mut d = Decoder::for_group(&group);
    assert!(matches!(
        d.add(b[2].id(), b[2].as_bytes().to_vec()),
        Err(ErasureError::UnexpectedShare { index: 2, .. })
    ));
    for s in &a[3..7] {
        d.add(s.id(), s.as_bytes().to_vec()).unwrap();
    }
    assert!(d.is_ready());
    assert_eq!(d.rebuild(0).unwrap(), a[0]);
    assert!(matches!(
        d.rebuild(8),
        Err(ErasureError::BadIndex { index: 8, n: 8 })
    ));
}

#[test]
fn garbage_and_wrong_length_headers_are_errors_not_panics() {
    let mut rng = Rng(13);
    let pack = rng.bytes(3000);
    let good = encode(p(4, 8), &[&pack]).unwrap()[6].as_bytes().to_vec();
    // Every truncation and a few extensions.
    for len in 0..good.len() {
        assert!(
            Share::from_bytes(good[..len].to_vec()).is_err(),
            "truncated to {len}"
        );
    }
    let mut longer = good.clone();
    longer.push(0);
    assert!(matches!(
        Share::from_bytes(longer),
        Err(ShareError::WrongLength { .. })
    ));
    // Every single-byte change in the header is either refused or parses (as some other
    // valid share); it never panics.
    let header_len = FIXED_HEADER_LEN + PACK_ENTRY_LEN;
    for pos in 0..header_len {
        for v in [0u8, 1, 2, 0x7f, 0xff] {
            let mut b = good.clone();
            b[pos] = v;
            let _ = Share::from_bytes(b);
        }
    }
    // Specific errors.
    let set = |pos: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[pos..pos + bytes.len()].copy_from_slice(bytes);
        Share::from_bytes(b).unwrap_err()
    };
    assert!(matches!(set(0, b"XXXX"), ShareError::BadMagic(_)));
    assert_eq!(set(4, &[2]), ShareError::UnsupportedVersion(2));
    assert_eq!(set(5, &[0]), ShareError::BadParams { k: 0, n: 8 });
    assert_eq!(set(5, &[8]), ShareError::BadParams { k: 8, n: 8 });
    assert_eq!(set(7, &[8]), ShareError::BadIndex { index: 8, n: 8 });
    assert!(matches!(
        set(8, &u64::MAX.to_le_bytes()),
        ShareError::BadOriginalLen(_)
    ));
    assert!(matches!(
        set(8, &2999u64.to_le_bytes()),
        ShareError::LengthSum { .. }
    ));
    assert!(matches!(
        set(16, &752u64.to_le_bytes()),
        ShareError::BadShardSize { .. }
    ));
    assert_eq!(set(24, &[0, 0]), ShareError::BadPackCount(0));
    assert!(matches!(
        set(24, &[0xff, 0xff]),
        ShareError::BadPackCount(_)
    ));
    let _ = set(24, &[2, 0]); // reads the shard as a second pack entry: some error
                              // Random garbage of many lengths, with and without a valid-looking prefix.
    for _ in 0..2000 {
        let len = rng.below(400);
        let mut b = rng.bytes(len);
        if len >= 8 && rng.below(2) == 0 {
            b[..8].copy_from_slice(&[b'P', b'L', b'S', b'H', 1, 4, 8, 1]);
        }
        assert!(Share::from_bytes(b.clone()).is_err());
        let mut d = Decoder::new();
        assert!(d.add(ShareId::of_bytes(&b), b).is_err());
    }
    // Non-zero padding in a data share is refused (its name would differ anyway).
    let small = encode(p(4, 8), &[&pack[..2999]]).unwrap(); // 2999 bytes: shard 750, last 749 used
    let mut b = small[3].as_bytes().to_vec();
    *b.last_mut().unwrap() = 1;
    assert_eq!(
        Share::from_bytes(b).unwrap_err(),
        ShareError::NonZeroPadding { index: 3 }
    );
}

#[test]
fn encode_refuses_bad_input() {
    assert_eq!(encode(p(4, 8), &[]).unwrap_err(), ErasureError::NoPacks);
    assert_eq!(
        encode(p(4, 8), &[b"".as_slice()]).unwrap_err(),
        ErasureError::EmptyPack
    );
    assert!(matches!(
        encode(p(4, 8), &[b"ab".as_slice(), b"ab".as_slice()]),
        Err(ErasureError::DuplicatePack(_))
    ));
    let many: Vec<Vec<u8>> = (0..=MAX_PACKS_PER_GROUP as u32)
        .map(|i| i.to_le_bytes().to_vec())
        .collect();
    let refs: Vec<&[u8]> = many.iter().map(|v| v.as_slice()).collect();
    assert!(matches!(
        encode(p(4, 8), &refs),
        Err(ErasureError::TooManyPacks(_))
    ));
}

#[test]
fn tampered_encoder_output_is_caught_by_the_pack_name() {
    // A share set whose names are self-consistent but whose data does not match the
    // pack names in the header (e.g. a buggy or malicious encoder).
    let mut rng = Rng(14);
    let pack = rng.bytes(4000);
    let shares = encode(p(2, 3), &[&pack]).unwrap();
    let mut b = shares[0].as_bytes().to_vec();
    let hl = shares[0].header().len();
    b[hl] ^= 0xff;
    let forged = Share::from_bytes(b).unwrap();
    let list = vec![
        (forged.id(), forged.as_bytes().to_vec()),
        (shares[1].id(), shares[1].as_bytes().to_vec()),
    ];
    assert!(matches!(
        decode(list.clone()),
        Err(ErasureError::PackMismatch { .. })
    ));
    assert!(matches!(
        rebuild_share(list, 2),
        Err(ErasureError::PackMismatch { .. })
    ));
}

#[test]
fn scheme_parsing_and_validation() {
    assert_eq!("4/8".parse::<Scheme>().unwrap(), Scheme::default());
    assert_eq!(
        " 10/16 ".parse::<Scheme>().unwrap(),
        Scheme::erasure(10, 16).unwrap()
    );
    assert_eq!("copies:2".parse::<Scheme>().unwrap(), Scheme::Copies(2));
    for s in [
        "4/8",
        "10/16",
        "1/2",
        "254/255",
        "copies:1",
        "copies:3",
        "copies:16",
    ] {
        assert_eq!(s.parse::<Scheme>().unwrap().to_string(), s);
    }
    let err = |s: &str| s.parse::<Scheme>().unwrap_err();
    assert!(matches!(err("0/4"), SchemeError::KZero(_)));
    assert!(matches!(
        err("4/4"),
        SchemeError::NoRedundancy { k: 4, n: 4, .. }
    ));
    assert!(matches!(err("8/4"), SchemeError::NoRedundancy { .. }));
    assert!(matches!(
        err("4/256"),
        SchemeError::TooManyShares { n: 256, .. }
    ));
    assert!(matches!(err("4/99999999999"), SchemeError::Syntax(_)));
    assert!(matches!(
        err("copies:0"),
        SchemeError::Copies { copies: 0, .. }
    ));
    assert!(matches!(
        err("copies:17"),
        SchemeError::Copies { copies: 17, .. }
    ));
    for s in [
        "", "4", "4/", "/8", "a/b", "-1/8", "4/8/2", "4:8", "copies:", "copies:x", "copies 2",
        "4 / +8",
    ] {
        let e = err(s);
        assert!(
            e.to_string().contains("bad redundancy scheme"),
            "{s:?}: {e}"
        );
    }
    assert_eq!(err("4/4").to_string(), "bad redundancy scheme \"4/4\": N (4) must be larger than K (4), otherwise no share may be lost");
    let s = Scheme::default();
    assert_eq!(
        (s.k(), s.n(), s.tolerated_losses(), s.storage_factor()),
        (4, 8, 4, 2.0)
    );
    let c = Scheme::Copies(3);
    assert_eq!(
        (c.k(), c.n(), c.tolerated_losses(), c.storage_factor()),
        (1, 3, 2, 3.0)
    );
    // Every valid k/n is one reed-solomon-simd supports.
    for n in 2..=255usize {
        for k in 1..n {
            assert!(
                reed_solomon_simd::ReedSolomonEncoder::supports(k, n - k),
                "{k}/{n}"
            );
        }
    }
    // Serde refuses invalid values too.
    let bytes = postcard::to_stdvec(&Scheme::default()).unwrap();
    assert_eq!(bytes, [0, 4, 8]);
    assert!(postcard::from_bytes::<Scheme>(&[0, 4, 4]).is_err());
    assert!(postcard::from_bytes::<Scheme>(&[1, 0]).is_err());
    assert_eq!(
        postcard::from_bytes::<Scheme>(&[1, 2]).unwrap(),
        Scheme::Copies(2)
    );
}

fn host(i: u8) -> HostId {
    HostId([i; 32])
}

#[test]
fn share_map_round_trip_placement_and_health() {
    let mut rng = Rng(15);
    let a = rng.bytes(20_000);
    let b = rng.bytes(30_000);
    let c = rng.bytes(5_000);
    let shares = encode(p(4, 8), &[&a, &b]).unwrap();
    let mut map = ShareMap::new();
    map.insert(ShareGroup::from_shares(&shares).unwrap())
        .unwrap();
    let cid = PackId::of_bytes(&c);
    map.insert(ShareGroup::copies(2, cid, c.len() as u64).unwrap())
        .unwrap();
    for (i, s) in shares.iter().enumerate() {
        map.place(&s.id(), host(i as u8)).unwrap();
    }
    assert!(matches!(
        map.place(&shares[1].id(), host(0)),
        Err(MapError::HostHoldsGroup { index: 0, .. })
    ));
    map.place(&ShareId(cid.0), host(0)).unwrap();
    map.place(&ShareId(cid.0), host(9)).unwrap();
    assert!(matches!(
        map.insert(ShareGroup::copies(2, cid, 5).unwrap()),
        Err(MapError::DuplicatePack(_))
    ));

    let bytes = map.to_bytes();
    assert_eq!(&bytes[..5], b"PLSM\x01");
    let back = ShareMap::from_bytes(&bytes).unwrap();
    assert_eq!(back, map);
    let g = back.group_of(&PackId::of_bytes(&b)).unwrap();
    assert_eq!(g.scheme, Scheme::default());
    assert_eq!(g.original_len(), 50_000);
    assert_eq!(back.shares_on(&host(0)).len(), 2);
    assert_eq!(back.share(&shares[3].id()).unwrap().1.hosts, vec![host(3)]);

    // A pack's bytes are found in the data shares at the ranges the map gives.
    let ranges = g.pack_ranges(&PackId::of_bytes(&b)).unwrap();
    let mut got = Vec::new();
    for (i, off, len) in ranges {
        got.extend_from_slice(
            &shares[usize::from(i)].as_bytes()[off as usize..(off + len) as usize],
        );
    }
    assert_eq!(got, b);

    // Health: hosts 0..=4 gone → 3 of 8 shares stand: not restorable, repair due.
    let alive = |h: &HostId| h.0[0] >= 5;
    let h = g.health(alive);
    assert_eq!(
        (h.standing, h.needed, h.target, h.restorable()),
        (3, 4, 8, false)
    );
    assert_eq!(h.lost, vec![0, 1, 2, 3, 4]);
    let due = back.needing_repair(alive);
    assert_eq!(due.len(), 2); // the copies group lost host 0 too
    assert_eq!(due[1].1.standing, 1);

    let mut m2 = back.clone();
    assert_eq!(m2.remove_host(&host(0)).len(), 2);
    m2.unplace(&shares[1].id(), &host(1)).unwrap();
    assert!(m2.shares_on(&host(1)).is_empty());

    // Corrupt or truncated encodings are errors.
    for len in 0..bytes.len() {
        assert!(
            ShareMap::from_bytes(&bytes[..len]).is_err(),
            "truncated to {len}"
        );
    }
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(ShareMap::from_bytes(&extra).is_err());
    let mut v2 = bytes.clone();
    v2[4] = 2;
    assert_eq!(
        ShareMap::from_bytes(&v2).unwrap_err(),
        MapError::UnsupportedVersion(2)
    );
    for _ in 0..500 {
        let mut b = bytes.clone();
        let pos = 5 + rng.below(b.len() - 5);
        b[pos] = rng.next() as u8;
        let _ = ShareMap::from_bytes(&b); // never panics
    }
    // A map in which one host holds two shares of a group is refused.
    let mut g2 = ShareGroup::from_shares(&encode(p(2, 3), &[&c[..100]]).unwrap()).unwrap();
    g2.shares[0].hosts.push(host(1));
    g2.shares[1].hosts.push(host(1));
    assert!(matches!(
        ShareMap::new().insert(g2),
        Err(MapError::BadGroup(_))
    ));
}

#[test]
fn plan_groups_packs_small_ones_together() {
    let mib = 1 << 20;
    let packs: Vec<(PackId, u64)> = [16, 17, 2, 3, 1, 70, 5]
        .iter()
        .enumerate()
        .map(|(i, &m)| (PackId([i as u8; 32]), m * mib))
        .collect();
    let plan = plan_groups(&packs, 20 * mib);
    assert_eq!(plan, vec![0..1, 1..3, 3..5, 5..6, 6..7]);
    assert_eq!(plan_groups(&[], 10), Vec::<std::ops::Range<usize>>::new());
}

#[test]
fn repair_plan_picks_k_live_sources_data_first_and_rebuilds() {
    let mut rng = Rng(16);
    let pack = rng.bytes(40_000);
    let shares = encode(p(4, 8), &[&pack]).unwrap();
    let mut group = ShareGroup::from_shares(&shares).unwrap();
    for (i, s) in group.shares.iter_mut().enumerate() {
        s.hosts.push(host(i as u8));
    }
    // Host 2 is gone, host 1 is excluded, hosts score by their number.
    let rank = |h: &HostId| match h.0[0] {
        1 | 2 => None,
        x => Some(f64::from(x)),
    };
    let plan = group.repair_plan(2, rank).unwrap();
    assert_eq!(plan.expected, shares[2].id());
    let idx: Vec<u8> = plan.sources.iter().map(|s| s.0).collect();
    assert_eq!(idx, vec![3, 0, 7, 6]); // data shares 0 and 3 (by score), then the best parity
    assert_eq!(
        plan.spares.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![5, 4]
    );
    assert!(group.holds(&host(5)) && !group.holds(&host(9)));
    // The new host follows the plan with a decoder bound to the group.
    let mut d = Decoder::for_group(&group);
    for (i, id, _) in &plan.sources {
        d.add(*id, shares[usize::from(*i)].as_bytes().to_vec())
            .unwrap();
    }
    assert_eq!(d.rebuild(plan.index).unwrap().id(), plan.expected);
    // Too few usable hosts.
    assert_eq!(
        group.repair_plan(0, |h| (h.0[0] < 4).then_some(1.0)),
        Err(MapError::NotRestorable { have: 3, need: 4 })
    );
    assert_eq!(
        group.repair_plan(8, |_| Some(1.0)),
        Err(MapError::BadIndex { index: 8 })
    );
    // Copies: any usable holder is a source.
    let mut c = ShareGroup::copies(2, PackId([7; 32]), 10).unwrap();
    c.shares[0].hosts = vec![host(1), host(3)];
    let plan = c.repair_plan(0, rank).unwrap();
    assert_eq!(plan.sources, vec![(0, ShareId([7; 32]), host(3))]);
}
