//! Drawing a [`HeapMap`] as SVG (after the snapshot: allocating is fine here).
//!
//! Layout, top to bottom: a title line with the totals, a legend (the fixed colours,
//! the fullness scale, one swatch per size class present), then one block per chunk,
//! [`PER_ROW`] to a row, in address order: the chunk's pages as a grid of [`COLS`] x
//! [`ROWS`] cells in page order, labelled with the chunk's address. Each span is one
//! `<path>` (the outline of its run of cells) with a `<title>` tooltip; consecutive
//! pages of a span are never drawn twice. Last, one line for the huge blocks, which
//! have their own mappings and no pages in chunks.
//!
//! Colours: Small spans take a hue from their size class (red for the smallest
//! objects through yellow, green and blue to violet for the largest) and a lightness
//! from their fullness (`live / capacity`: light when nearly empty, dark when full).
//! The rest are neutral: dark grey headers, hatched Large blocks, grey free resident
//! pages, near-white purged ones.
//!
//! The document describes itself for tools and tests: every chunk is a
//! `<g class="chunk" data-base="0x…">`, every span a `<path class="header|free|
//! purged|small|large" data-pages="N">` (Small ones also carry `data-class`,
//! `data-live` and `data-capacity`), the huge line a `<g class="huge" data-blocks
//! data-bytes>`, and the root `<svg>` carries the summary's totals as `data-*`.

use super::{HeapMap, HeapMapClass, HeapMapSpan, PageState};
use crate::size_class::{NUM_CLASSES, PAGE_SIZE, PAGES_PER_CHUNK};
use crate::stats::Bytes;
use alloc::format;
use alloc::string::String;
use core::fmt::{self, Write};

/// Pixels per page cell.
const CELL: usize = 10;
/// Cells per row of a chunk block.
const COLS: usize = 32;
/// Rows of a chunk block.
const ROWS: usize = PAGES_PER_CHUNK / COLS;
const_assert!(PAGES_PER_CHUNK % COLS == 0);
/// Chunk blocks per row of the picture.
const PER_ROW: usize = 3;
/// Outer margin and horizontal gap between chunk blocks.
const MARGIN: usize = 16;
const GAP: usize = 24;
/// Height of a chunk's label line, and vertical pitch of chunk rows.
const LABEL_H: usize = 18;
const ROW_PITCH: usize = LABEL_H + ROWS * CELL + 14;
const WIDTH: usize = 2 * MARGIN + PER_ROW * COLS * CELL + (PER_ROW - 1) * GAP;
/// Height of one legend line, and class swatches per legend line.
const LINE_H: usize = 20;
const CLASSES_PER_LINE: usize = 4;

const HEADER_FILL: &str = "#555";
const FREE_FILL: &str = "#bdbdbd";
const PURGED_FILL: &str = "#f0f0f0";

/// Writes the whole document.
pub(super) fn write(map: &HeapMap, w: &mut impl Write) -> fmt::Result {
    let s = map.summary();
    let class_lines = s.classes.len().div_ceil(CLASSES_PER_LINE);
    // Title (2 lines), fixed legend (2 lines), class swatches, then the chunks.
    let chunks_y = MARGIN + 4 * LINE_H + class_lines * LINE_H + LINE_H;
    let chunk_rows = s.chunks.div_ceil(PER_ROW);
    let huge_y = chunks_y + chunk_rows * ROW_PITCH + LINE_H / 2;
    let height = huge_y + MARGIN;
    let pages = s.chunks * PAGES_PER_CHUNK;
    writeln!(
        w,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" data-chunks=\"{}\" data-page-bytes=\"{PAGE_SIZE}\" \
         data-free-resident-bytes=\"{}\" data-free-purged-bytes=\"{}\" data-small-spans=\"{}\" \
         data-large-spans=\"{}\" data-huge-blocks=\"{}\" data-huge-bytes=\"{}\">",
        s.chunks,
        s.free_resident_bytes(),
        s.free_purged_bytes(),
        s.small_spans(),
        s.large_spans,
        s.huge_blocks,
        s.huge_bytes,
    )?;
    writeln!(w, "<title>strata heap map</title>")?;
    writeln!(
        w,
        "<defs><pattern id=\"lg\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" \
         patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#9a9a9a\"/>\
         <rect width=\"3\" height=\"6\" fill=\"#505050\"/></pattern></defs>"
    )?;
    writeln!(
        w,
        "<style>text{{font-family:sans-serif;font-size:12px;fill:#222}}.t{{font-size:16px;\
         font-weight:bold}}path{{stroke:#fff;stroke-width:.7}}.header{{fill:{HEADER_FILL}}}\
         .free{{fill:{FREE_FILL}}}.purged{{fill:{PURGED_FILL}}}.large{{fill:url(#lg)}}\
         .frame{{fill:none;stroke:#888}}</style>"
    )?;
    writeln!(w, "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>")?;

    // Title and totals.
    let mut y = MARGIN + 12;
    writeln!(
        w,
        "<text class=\"t\" x=\"{MARGIN}\" y=\"{y}\">strata heap map: {} chunk{} ({} of pages){}</text>",
        s.chunks,
        if s.chunks == 1 { "" } else { "s" },
        Bytes((pages * PAGE_SIZE) as u64),
        Plus(s.huge_blocks, s.huge_bytes),
    )?;
    y += LINE_H;
    writeln!(
        w,
        "<text x=\"{MARGIN}\" y=\"{y}\">small: {} in {} spans, {} live objects · large: {} in {} \
         blocks · free: {} resident, {} purged · headers: {}</text>",
        Bytes((s.small_pages * PAGE_SIZE) as u64),
        s.small_spans(),
        s.live_objects(),
        Bytes((s.large_pages * PAGE_SIZE) as u64),
        s.large_spans,
        Bytes(s.free_resident_bytes() as u64),
        Bytes(s.free_purged_bytes() as u64),
        Bytes((s.header_pages * PAGE_SIZE) as u64),
    )?;

    // Legend: the fixed colours, then the fullness scale.
    y += LINE_H + 4;
    let mut x = MARGIN;
    for (fill, label) in [
        (HEADER_FILL, "chunk header"),
        ("url(#lg)", "large block"),
        (FREE_FILL, "free, resident"),
        (PURGED_FILL, "free, purged or untouched"),
    ] {
        swatch(w, x, y, fill)?;
        writeln!(w, "<text x=\"{}\" y=\"{y}\">{label}</text>", x + 16)?;
        x += 40 + 7 * label.len();
    }
    writeln!(
        w,
        "<g class=\"huge-legend\"><rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"none\" \
         stroke=\"#555\" stroke-dasharray=\"2 2\"/><text x=\"{}\" y=\"{y}\">huge (own mappings, \
         not drawn): {} block{}, {}</text></g>",
        y - 10,
        x + 16,
        s.huge_blocks,
        if s.huge_blocks == 1 { "" } else { "s" },
        Bytes(s.huge_bytes as u64),
    )?;
    y += LINE_H;
    writeln!(
        w,
        "<text x=\"{MARGIN}\" y=\"{y}\">small spans: hue = size class (below), lightness = \
         fullness (live / capacity):</text>"
    )?;
    let mut x = MARGIN + 500;
    for pct in [0, 25, 50, 75, 100] {
        swatch(w, x, y, &small_fill(NUM_CLASSES / 2, pct))?;
        writeln!(w, "<text x=\"{}\" y=\"{y}\">{pct} %</text>", x + 16)?;
        x += 64;
    }

    // One swatch per class present, at its overall fullness.
    for (i, c) in s.classes.iter().enumerate() {
        if i % CLASSES_PER_LINE == 0 {
            y += LINE_H;
        }
        let x = MARGIN + (i % CLASSES_PER_LINE) * (WIDTH - 2 * MARGIN) / CLASSES_PER_LINE;
        class_swatch(w, x, y, c)?;
    }

    for (i, chunk) in map.chunks().enumerate() {
        let x = MARGIN + (i % PER_ROW) * (COLS * CELL + GAP);
        let y = chunks_y + (i / PER_ROW) * ROW_PITCH + LABEL_H;
        write_chunk(w, x, y, chunk.base, chunk.spans)?;
    }

    writeln!(
        w,
        "<g class=\"huge\" data-blocks=\"{}\" data-bytes=\"{}\"><text x=\"{MARGIN}\" y=\"{huge_y}\">\
         huge blocks (own mappings, outside the chunks): {} block{}, {}</text></g>",
        s.huge_blocks,
        s.huge_bytes,
        s.huge_blocks,
        if s.huge_blocks == 1 { "" } else { "s" },
        Bytes(s.huge_bytes as u64),
    )?;
    writeln!(w, "</svg>")
}

/// A 12 x 12 legend swatch whose text baseline is `y`.
fn swatch(w: &mut impl Write, x: usize, y: usize, fill: &str) -> fmt::Result {
    writeln!(
        w,
        "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{fill}\" stroke=\"#888\" \
         stroke-width=\".5\"/>",
        y - 10
    )
}

fn class_swatch(w: &mut impl Write, x: usize, y: usize, c: &HeapMapClass) -> fmt::Result {
    swatch(w, x, y, &small_fill(c.class, percent(c.live, c.capacity)))?;
    writeln!(
        w,
        "<text x=\"{}\" y=\"{y}\">{} (class {}): {} span{}, {} % full</text>",
        x + 16,
        Bytes(c.object_bytes as u64),
        c.class,
        c.spans,
        if c.spans == 1 { "" } else { "s" },
        percent(c.live, c.capacity),
    )
}

/// One chunk block, its grid's top-left corner at (`x`, `y`).
fn write_chunk(
    w: &mut impl Write,
    x: usize,
    y: usize,
    base: usize,
    spans: &[HeapMapSpan],
) -> fmt::Result {
    let used: usize = spans
        .iter()
        .filter(|s| matches!(s.state, PageState::Small { .. } | PageState::Large))
        .map(|s| s.npages as usize)
        .sum();
    writeln!(
        w,
        "<g class=\"chunk\" data-base=\"{base:#x}\" transform=\"translate({x} {y})\">\n\
         <text x=\"0\" y=\"-5\">chunk {base:#x}: {} % of pages in use</text>",
        percent(used, PAGES_PER_CHUNK),
    )?;
    for s in spans {
        let at = base + s.first_page as usize * PAGE_SIZE;
        let (n, bytes) = (s.npages, Bytes(s.bytes() as u64));
        let pl = if n == 1 { "" } else { "s" };
        match s.state {
            PageState::Small {
                class,
                live,
                capacity,
            } => {
                let obj = Bytes(s.object_bytes().unwrap_or(0) as u64);
                writeln!(
                    w,
                    "<path class=\"small\" data-class=\"{class}\" data-pages=\"{n}\" \
                     data-live=\"{live}\" data-capacity=\"{capacity}\" fill=\"{}\" d=\"{}\">\
                     <title>{obj} objects (class {class}): {live} of {capacity} live; \
                     {n} page{pl} at {at:#x}</title></path>",
                    small_fill(class as usize, percent(live as usize, capacity as usize)),
                    Outline(s),
                )?;
            }
            state => {
                let (class, what) = match state {
                    PageState::Header => ("header", "chunk header"),
                    PageState::Large => ("large", "large block"),
                    PageState::FreeResident => ("free", "free, resident"),
                    _ => ("purged", "free, purged or untouched"),
                };
                writeln!(
                    w,
                    "<path class=\"{class}\" data-pages=\"{n}\" d=\"{}\"><title>{what}: \
                     {n} page{pl} ({bytes}) at {at:#x}</title></path>",
                    Outline(s),
                )?;
            }
        }
    }
    writeln!(
        w,
        "<rect class=\"frame\" width=\"{}\" height=\"{}\"/>\n</g>",
        COLS * CELL,
        ROWS * CELL
    )
}

/// `100 * part / whole`, rounded down; 0 for an empty whole.
fn percent(part: usize, whole: usize) -> usize {
    (100 * part).checked_div(whole).unwrap_or(0)
}

/// The fill of a Small span: hue from the class, lightness from the fullness.
#[allow(clippy::disallowed_macros)] // drawing runs after the copy, outside the allocator
fn small_fill(class: usize, pct: usize) -> String {
    let hue = class * 300 / (NUM_CLASSES - 1).max(1);
    let light = 88 - pct.min(100) / 2;
    format!("hsl({hue},75%,{light}%)")
}

/// The SVG path of a span's run of cells (pages in row-major order): a rectangle if
/// it fits in one row, else the outline of "rest of the first row, full middle rows,
/// start of the last row" as one polygon (degenerate edges where a part is empty are
/// harmless).
struct Outline<'a>(&'a HeapMapSpan);

impl fmt::Display for Outline<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.0.first_page as usize;
        let last = first + (self.0.npages as usize).max(1) - 1;
        let (r0, c0) = (first / COLS * CELL, first % COLS * CELL);
        let (r1, c1) = (last / COLS * CELL, (last % COLS + 1) * CELL);
        let (right, row) = (COLS * CELL, CELL);
        if r0 == r1 {
            write!(f, "M{c0} {r0}H{c1}V{}H{c0}Z", r0 + row)
        } else {
            write!(
                f,
                "M{c0} {r0}H{right}V{r1}H{c1}V{}H0V{}H{c0}Z",
                r1 + row,
                r0 + row
            )
        }
    }
}

/// ` + N huge blocks (X)` if there are any.
struct Plus(usize, usize);

impl fmt::Display for Plus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            1 => write!(f, " + 1 huge block ({})", Bytes(self.1 as u64)),
            n => write!(f, " + {n} huge blocks ({})", Bytes(self.1 as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outline(first: u32, npages: u32) -> String {
        let s = HeapMapSpan {
            first_page: first,
            npages,
            state: PageState::Large,
        };
        Outline(&s).to_string()
    }

    #[test]
    fn a_span_in_one_row_is_a_rectangle_and_a_longer_one_a_single_outline() {
        assert_eq!(outline(5, 3), "M50 0H80V10H50Z");
        assert_eq!(outline(31, 1), "M310 0H320V10H310Z");
        // Pages 30..=33: the end of row 0 and the start of row 1.
        assert_eq!(outline(30, 4), "M300 0H320V10H20V20H0V10H300Z");
        // The whole usable part of a chunk after a 5-page header.
        assert_eq!(
            outline(5, (PAGES_PER_CHUNK - 5) as u32),
            "M50 0H320V150H320V160H0V10H50Z"
        );
    }

    #[test]
    fn fullness_darkens_and_classes_spread_over_the_hues() {
        assert_eq!(small_fill(0, 0), "hsl(0,75%,88%)");
        assert_eq!(small_fill(NUM_CLASSES - 1, 100), "hsl(300,75%,38%)");
        assert_eq!(percent(1, 0), 0);
        assert_eq!(percent(3, 4), 75);
    }
}
