#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata;

mod common;
use common::{KIB, MIB, Rng};

// The heap map (`strata::heap_map`, `write_heap_map`): the SVG is a well-formed
// document, and what it draws adds up to the heap's own counters
// (`strata::stats`) and to what the test allocated.
//
// The counters are only comparable with a quiet heap, so the tests of this binary
// run one at a time (SERIAL) and compare against `stats()` taken just before
// and just after the map, retrying while those two differ (the test harness's own
// threads may still allocate now and then).

use std::collections::HashMap;
use std::sync::Mutex;
use std::thread;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- a small XML checker ------------------------------------------------------------

/// An element of the document: its name and attributes.
#[derive(Debug)]
struct Element {
    name: String,
    attrs: HashMap<String, String>,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(|s| s.as_str())
    }
    fn num(&self, name: &str) -> usize {
        let v = self
            .attr(name)
            .unwrap_or_else(|| panic!("<{}> without {name}", self.name));
        v.parse()
            .unwrap_or_else(|_| panic!("<{}> {name}={v:?} is not a number", self.name))
    }
}

/// Checks that `text` is exactly one well-formed element (tags balanced and
/// properly nested, attributes quoted and unique, `&` only in entities, nothing but
/// white space outside the root) and returns every element in document order.
fn parse_xml(text: &str) -> Result<Vec<Element>, String> {
    fn entities_ok(s: &str) -> bool {
        s.split('&').skip(1).all(|rest| {
            let Some(end) = rest.find(';') else {
                return false;
            };
            let e = &rest[..end];
            matches!(e, "amp" | "lt" | "gt" | "quot" | "apos")
                || e.strip_prefix('#').is_some_and(|n| {
                    n.strip_prefix('x').map_or_else(
                        || n.parse::<u32>().is_ok(),
                        |h| u32::from_str_radix(h, 16).is_ok(),
                    )
                })
        })
    }
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '.');
    let mut elements = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            if !stack.is_empty() || !rest.trim().is_empty() {
                return Err(format!("text outside the root or unclosed: {:?}", &stack));
            }
            break;
        };
        let chars = &rest[..lt];
        if chars.contains('>') || !entities_ok(chars) {
            return Err(format!("bad character data {chars:?}"));
        }
        if stack.is_empty() && !chars.trim().is_empty() {
            return Err(format!("text outside the root: {chars:?}"));
        }
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<!--") {
            let end = r.find("-->").ok_or("unclosed comment")?;
            rest = &r[end + 3..];
        } else if let Some(r) = rest.strip_prefix("<?") {
            if !elements.is_empty() {
                return Err("processing instruction after the root started".into());
            }
            let end = r.find("?>").ok_or("unclosed <?")?;
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix("</") {
            let end = r.find('>').ok_or("unclosed end tag")?;
            let name = r[..end].trim_end();
            match stack.pop() {
                Some(open) if open == name => {}
                open => return Err(format!("</{name}> closes {open:?}")),
            }
            rest = &r[end + 1..];
        } else {
            let r = &rest[1..];
            let n = r.find(|c: char| !name_char(c)).unwrap_or(r.len());
            if n == 0 {
                return Err(format!("bad tag at {:?}", &rest[..rest.len().min(40)]));
            }
            let name = r[..n].to_string();
            let mut r = &r[n..];
            let mut attrs = HashMap::new();
            let self_closing = loop {
                let t = r.trim_start();
                if let Some(t) = t.strip_prefix("/>") {
                    r = t;
                    break true;
                }
                if let Some(t) = t.strip_prefix('>') {
                    r = t;
                    break false;
                }
                if t.len() == r.len() {
                    return Err(format!("<{name}>: no space before an attribute"));
                }
                let n = t.find(|c: char| !name_char(c)).unwrap_or(t.len());
                let key = &t[..n];
                let t = t[n..]
                    .strip_prefix('=')
                    .ok_or(format!("<{name}> {key}: no '='"))?;
                let q = t.chars().next().filter(|&q| q == '"' || q == '\'');
                let q = q.ok_or(format!("<{name}> {key}: unquoted value"))?;
                let end = t[1..].find(q).ok_or(format!("<{name}> {key}: unclosed"))?;
                let value = &t[1..1 + end];
                if key.is_empty() || value.contains('<') || !entities_ok(value) {
                    return Err(format!("<{name}>: bad attribute {key}={value:?}"));
                }
                if attrs.insert(key.to_string(), value.to_string()).is_some() {
                    return Err(format!("<{name}>: attribute {key} twice"));
                }
                r = &t[end + 2..];
            };
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(name.clone());
            }
            elements.push(Element { name, attrs });
            rest = r;
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed elements {stack:?}"));
    }
    if roots != 1 {
        return Err(format!("{roots} root elements"));
    }
    Ok(elements)
}

#[test]
fn the_xml_checker_rejects_what_it_should() {
    assert!(parse_xml("<svg a=\"1\"><g><path d='x'/></g></svg>\n").is_ok());
    for bad in [
        "<svg><g></svg>",
        "<svg></g></svg>",
        "<svg a=1></svg>",
        "<svg a=\"1\" a=\"2\"></svg>",
        "<svg a=\"1\"b=\"2\"></svg>",
        "<svg>a & b</svg>",
        "<svg></svg><svg></svg>",
        "text<svg></svg>",
        "<svg><g>",
    ] {
        assert!(parse_xml(bad).is_err(), "accepted {bad:?}");
    }
}

// ---- the maps ------------------------------------------------------------------------

/// What an SVG heap map draws, read back from the document alone.
#[derive(Debug, Default)]
struct Drawn {
    chunks: usize,
    pages: HashMap<String, usize>,
    /// Per size class: (spans, live objects).
    classes: HashMap<usize, (usize, usize)>,
    huge_blocks: usize,
    huge_bytes: usize,
}

fn read_svg(svg: &str) -> Drawn {
    let elements = parse_xml(svg).unwrap_or_else(|e| panic!("SVG not well-formed: {e}"));
    assert_eq!(elements[0].name, "svg", "the root is <svg>");
    assert_eq!(
        elements[0].attr("xmlns"),
        Some("http://www.w3.org/2000/svg")
    );
    let mut d = Drawn::default();
    for e in &elements {
        match (e.name.as_str(), e.attr("class")) {
            ("g", Some("chunk")) => d.chunks += 1,
            ("g", Some("huge")) => {
                d.huge_blocks = e.num("data-blocks");
                d.huge_bytes = e.num("data-bytes");
            }
            ("path", Some(kind)) => {
                *d.pages.entry(kind.to_string()).or_default() += e.num("data-pages");
                if kind == "small" {
                    assert!(e.num("data-live") <= e.num("data-capacity"));
                    let c = d.classes.entry(e.num("data-class")).or_default();
                    c.0 += 1;
                    c.1 += e.num("data-live");
                }
            }
            _ => {}
        }
    }
    d
}

/// The page-level figures of a `stats()` snapshot that a map draws (operation
/// counts left out: the map itself allocates, before and after its copy).
#[derive(Debug, PartialEq, Eq)]
struct Counts {
    chunks: usize,
    free_page_bytes: usize,
    free_zeroed_bytes: usize,
    huge_blocks: usize,
    huge_bytes: usize,
}

fn counts() -> Counts {
    let s = strata::stats();
    Counts {
        chunks: s.chunks as usize,
        free_page_bytes: s.page_free_bytes as usize,
        free_zeroed_bytes: s.page_purged_bytes as usize,
        huge_blocks: s.huge_blocks as usize,
        huge_bytes: s.huge_bytes as usize,
    }
}

/// A map, its SVG, and the page figures of `stats()` of the same moment.
fn quiet_map() -> (strata::HeapMap, String, Counts) {
    for _ in 0..20 {
        let before = counts();
        let map = strata::heap_map();
        let after = counts();
        if before == after {
            let mut svg = Vec::new();
            map.write_svg(&mut svg).expect("write to a Vec");
            let svg = String::from_utf8(svg).expect("UTF-8");
            return (map, svg, after);
        }
        thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the heap never held still for a map");
}

#[test]
fn the_svg_is_well_formed_and_its_counts_match_the_heaps_own() {
    let _serial = serial();
    const OBJECTS: usize = 5000;
    const OBJECT_BYTES: usize = 200;
    let small: Vec<Box<[u8]>> = (0..OBJECTS)
        .map(|i| vec![i as u8; OBJECT_BYTES].into_boxed_slice())
        .collect();
    let large: Vec<Box<[u8]>> = (0..4)
        .map(|_| vec![1u8; 400 * KIB].into_boxed_slice())
        .collect();
    let huge = vec![2u8; 3 * MIB].into_boxed_slice();
    strata::release_memory();
    // After the purge, free one Large block: its pages are free and resident (the
    // purge delay has not passed).
    let mut large = large;
    drop(large.pop());
    strata::flush_thread_cache();

    let (map, svg, counts) = quiet_map();
    let sum = map.summary();
    let drawn = read_svg(&svg);
    let page = strata::HeapMap::PAGE_BYTES;
    let pages = |k: &str| drawn.pages.get(k).copied().unwrap_or(0);

    assert_eq!(drawn.chunks, counts.chunks, "one block per chunk");
    assert_eq!(sum.chunks, counts.chunks);
    assert_eq!(
        drawn.pages.values().sum::<usize>(),
        counts.chunks * strata::HeapMap::PAGES_PER_CHUNK,
        "every page of every chunk drawn once"
    );
    assert_eq!(
        (pages("free") + pages("purged")) * page,
        counts.free_page_bytes
    );
    assert_eq!(pages("purged") * page, counts.free_zeroed_bytes);
    assert_eq!(sum.free_bytes(), counts.free_page_bytes);
    assert_eq!(sum.free_purged_bytes(), counts.free_zeroed_bytes);
    // (In checked mode the freed block waits in quarantine instead.)
    assert!(
        strata::CHECKED || pages("free") * page >= 400 * KIB,
        "the freed Large block is free and resident: {drawn:?}"
    );
    assert!(pages("large") >= 3 * 400 * KIB / page && sum.large_spans >= 3);
    assert_eq!(pages("large"), sum.large_pages);
    assert_eq!(pages("header"), sum.header_pages);
    assert_eq!(pages("small"), sum.small_pages);
    assert_eq!(
        (drawn.huge_blocks, drawn.huge_bytes),
        (counts.huge_blocks, counts.huge_bytes)
    );
    assert!(drawn.huge_blocks >= 1 && drawn.huge_bytes >= 3 * MIB);

    // The span under the first object, found by address, is a Small span whose
    // class holds at least the objects the test keeps.
    let addr = small[0].as_ptr() as usize;
    let span = map
        .chunks()
        .flat_map(|c| {
            c.spans
                .iter()
                .map(move |s| (c.base + s.first_page as usize * page, s))
        })
        .find(|&(start, s)| (start..start + s.bytes()).contains(&addr))
        .map(|(_, s)| *s)
        .expect("the object's span is mapped");
    let strata::PageState::Small { class, live, .. } = span.state else {
        panic!("a 200-byte object in {span:?}");
    };
    let class_bytes = span.object_bytes().expect("a Small span");
    assert!(class_bytes >= OBJECT_BYTES && live >= 1);
    let class = sum
        .classes
        .iter()
        .find(|c| c.class == class as usize)
        .expect("the class is in the summary");
    assert_eq!(sum.class_of_size(class_bytes), Some(class));
    assert!(
        class.live >= OBJECTS,
        "{} live objects of {class_bytes} B mapped, {OBJECTS} held: {class:?}",
        class.live
    );
    assert_eq!(
        drawn.classes.get(&class.class),
        Some(&(class.spans, class.live))
    );
    assert!(class.capacity >= class.live && class.pages * page >= OBJECTS * class_bytes);
    assert_eq!(sum.small_spans(), drawn.classes.values().map(|c| c.0).sum());
    assert_eq!(
        sum.live_objects(),
        drawn.classes.values().map(|c| c.1).sum()
    );

    for chunk in map.chunks() {
        assert_eq!(chunk.base % (4 * MIB), 0, "chunks are 4 MiB aligned");
        assert_eq!(
            chunk.page_states().count(),
            strata::HeapMap::PAGES_PER_CHUNK
        );
        assert_eq!(chunk.spans[0].state, strata::PageState::Header);
        assert!(svg.contains(&format!("data-base=\"{:#x}\"", chunk.base)));
    }
    assert!(
        small
            .iter()
            .enumerate()
            .all(|(i, b)| b.iter().all(|&x| x == i as u8))
    );
    drop((small, large, huge));
}

#[test]
fn write_heap_map_returns_the_totals_of_what_it_drew() {
    let _serial = serial();
    let keep: Vec<Box<[u8]>> = (0..300)
        .map(|i| vec![7u8; 24 + i * 40].into_boxed_slice())
        .collect();
    let mut out = Vec::new();
    let sum = strata::write_heap_map(&mut out).expect("write to a Vec");
    let svg = String::from_utf8(out).expect("UTF-8");
    assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
    let drawn = read_svg(&svg);
    assert_eq!(drawn.chunks, sum.chunks);
    assert!(sum.chunks >= 1 && sum.small_spans() >= 1);
    assert_eq!(
        drawn.pages.get("small").copied().unwrap_or(0),
        sum.small_pages
    );
    assert_eq!(
        sum.live_objects(),
        drawn.classes.values().map(|c| c.1).sum()
    );
    assert!(svg.contains(&format!("data-chunks=\"{}\"", sum.chunks)));
    drop(keep);
}

#[test]
fn maps_taken_while_other_threads_allocate_are_whole_and_well_formed() {
    let _serial = serial();
    let stop = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|s| {
        // The allocating threads stop when this goes, also when an assertion
        // below fails (else the scope would wait for them forever).
        let _stop = StopOnDrop(&stop);
        for t in 0..3u64 {
            let stop = &stop;
            s.spawn(move || {
                let mut rng = Rng::new(t);
                let mut held: Vec<Vec<u8>> = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let size = match rng.below(100) {
                        0 => 300 * KIB + rng.below(600 * KIB),
                        1..10 => 1 + rng.below(64 * KIB),
                        _ => 1 + rng.below(1024),
                    };
                    held.push(vec![t as u8; size]);
                    if held.len() > 2000 {
                        held.swap_remove(rng.below(held.len()));
                    }
                }
            });
        }
        for _ in 0..20 {
            let map = strata::heap_map();
            let mut svg = Vec::new();
            map.write_svg(&mut svg).expect("write to a Vec");
            let drawn = read_svg(&String::from_utf8(svg).expect("UTF-8"));
            let sum = map.summary();
            assert_eq!(drawn.chunks, sum.chunks);
            assert_eq!(
                drawn.pages.values().sum::<usize>(),
                sum.chunks * strata::HeapMap::PAGES_PER_CHUNK
            );
            for chunk in map.chunks() {
                let mut next = 0;
                for span in chunk.spans {
                    assert_eq!(span.first_page as usize, next, "spans tile the chunk");
                    next += span.npages as usize;
                    if let strata::PageState::Small { live, capacity, .. } = span.state {
                        assert!(live >= 1 && live <= capacity, "{span:?}");
                    }
                }
                assert_eq!(next, strata::HeapMap::PAGES_PER_CHUNK);
            }
        }
    });
    strata::validate_heap().expect("heap intact after the maps");
}

/// Sets its flag when dropped, on unwinding too.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn the_map_and_stats_agree_on_chunks_spans_and_pages() {
    let _g = serial();
    let keep: Vec<Box<[u8; 200]>> = (0..3000).map(|i| Box::new([i as u8; 200])).collect();
    let large = vec![7u8; 600 << 10];
    // Quiesce as the other tests do, then compare a map with a snapshot taken
    // right after it (nothing allocates in between).
    strata::flush_thread_cache();
    let (map, s) = (0..20)
        .find_map(|_| {
            let before = strata::stats();
            let map = strata::heap_map();
            let s = strata::stats();
            let still = |a: &strata::Stats, b: &strata::Stats| {
                (a.chunks, a.page_free_bytes, a.large_bytes, a.huge_bytes)
                    == (b.chunks, b.page_free_bytes, b.large_bytes, b.huge_bytes)
                    && a.classes.iter().zip(b.classes.iter()).all(|(x, y)| {
                        let out = |c: &strata::ClassStats| {
                            (c.spans, c.live_objects + c.thread_cached + c.central_cached)
                        };
                        out(x) == out(y)
                    })
            };
            if still(&before, &s) {
                return Some((map, s));
            }
            thread::sleep(std::time::Duration::from_millis(10));
            None
        })
        .expect("the heap never held still for a map");
    let m = map.summary();
    assert_eq!(m.chunks as u64, s.chunks, "{s}");
    assert_eq!(m.huge_blocks as u64, s.huge_blocks);
    assert_eq!(m.huge_bytes as u64, s.huge_bytes);
    assert_eq!(m.large_spans as u64, s.large_blocks);
    assert_eq!((m.large_pages * 8 * KIB) as u64, s.large_bytes);
    assert_eq!(m.free_bytes() as u64, s.page_free_bytes);
    assert_eq!(m.free_purged_bytes() as u64, s.page_purged_bytes);
    let mut spans = 0;
    for c in &m.classes {
        let sc = &s.classes[c.class];
        assert_eq!(c.object_bytes as u32, sc.size);
        assert_eq!(c.spans as u64, sc.spans, "class {}: {s}", sc.size);
        assert_eq!((c.pages * 8 * KIB) as u64, sc.span_bytes);
        // The map counts objects out of their spans: live plus cached.
        assert_eq!(
            c.live as u64,
            sc.live_objects + sc.thread_cached + sc.central_cached,
            "class {}: {s}",
            sc.size
        );
        spans += c.spans as u64;
    }
    assert_eq!(spans, s.classes.iter().map(|c| c.spans).sum::<u64>());
    drop(std::hint::black_box((keep, large)));
}
