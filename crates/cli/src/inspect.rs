//! `spherepipe inspect PATH [--sheet out.png]`: what is in a shard file or directory.

use anyhow::{bail, Context, Result};
use spherepipe_face_table::{decode_rgb, read_rows, read_string_column};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The Parquet files at `path` (a file, or every `*.parquet` directly in a directory).
fn parquet_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("{} is neither a Parquet file nor a readable directory", path.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no .parquet files in {}", path.display());
    }
    Ok(files)
}

/// Bucket label for a count of images per identity.
fn bucket(n: usize) -> &'static str {
    match n {
        1 => "1",
        2..=4 => "2-4",
        5..=9 => "5-9",
        10..=19 => "10-19",
        20..=49 => "20-49",
        50..=99 => "50-99",
        _ => "100+",
    }
}

/// What `spherepipe inspect` prints for a shard file or directory; with `sheet`, also a contact sheet of `samples` faces with their landmarks.
pub fn inspect(path: &Path, sheet: Option<&Path>, samples: usize) -> Result<String> {
    let files = parquet_files(path)?;
    let mut out = String::new();
    let mut per_identity: BTreeMap<String, usize> = BTreeMap::new();
    let mut schema = None;
    let mut rows = 0;
    for f in &files {
        let (s, ids) = read_string_column(f, "identity")?;
        rows += ids.len();
        for id in ids {
            *per_identity.entry(id).or_default() += 1;
        }
        schema.get_or_insert(s);
    }
    out += &format!("{} file(s), {rows} rows, {} identities\n", files.len(), per_identity.len());
    if let Some(s) = schema {
        out += "schema:\n";
        for f in s.fields() {
            out += &format!(
                "  {:<10} {}{}\n",
                f.name(),
                f.data_type(),
                if f.is_nullable() { " (nullable)" } else { "" }
            );
        }
    }
    let order = ["1", "2-4", "5-9", "10-19", "20-49", "50-99", "100+"];
    let mut hist: BTreeMap<&str, usize> = BTreeMap::new();
    for n in per_identity.values() {
        *hist.entry(bucket(*n)).or_default() += 1;
    }
    let top = hist.values().copied().max().unwrap_or(1);
    out += "images per identity:\n";
    for b in order {
        let n = hist.get(b).copied().unwrap_or(0);
        out += &format!("  {b:>6} {n:>7} {}\n", "#".repeat((n * 40).div_ceil(top.max(1))));
    }
    if let Some(sheet) = sheet {
        let (canvas, n) = contact_sheet(&files[0], samples)?;
        canvas.save(sheet).with_context(|| format!("writing {}", sheet.display()))?;
        out += &format!(
            "contact sheet of {n} faces from {} written to {}\n",
            files[0].display(),
            sheet.display()
        );
    }
    Ok(out)
}

/// A contact sheet of up to `count` faces of the first Parquet file at `path` (a file or a
/// directory of them) as PNG bytes, how many it shows, and the file's name.
pub fn first_faces(path: &Path, count: usize) -> Result<(Vec<u8>, usize, String)> {
    let file = parquet_files(path)?.remove(0);
    let (canvas, n) = contact_sheet(&file, count)?;
    let mut png = Vec::new();
    canvas.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    let name = file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    Ok((png, n, name))
}

/// Tiles up to `count` faces (evenly spread over the file) with their landmarks drawn.
fn contact_sheet(file: &Path, count: usize) -> Result<(image::RgbImage, usize)> {
    let rows = read_rows(file)?;
    if rows.is_empty() {
        bail!("{} has no rows to draw", file.display());
    }
    let picks: Vec<usize> = (0..count.min(rows.len())).map(|i| i * rows.len() / count.min(rows.len())).collect();
    let (w, h) = (rows[0].width as u32, rows[0].height as u32);
    let cols = 8.min(picks.len()) as u32;
    let lines = (picks.len() as u32).div_ceil(cols);
    let gap = 2;
    let mut canvas = image::RgbImage::from_pixel(cols * (w + gap) + gap, lines * (h + gap) + gap, image::Rgb([255, 255, 255]));
    let colours = [[255, 0, 0], [0, 200, 0], [0, 80, 255], [255, 200, 0], [255, 0, 255]];
    for (k, &i) in picks.iter().enumerate() {
        let r = &rows[i];
        let (rgb, fw, fh) = decode_rgb(&r.png)?;
        let face = image::RgbImage::from_raw(fw, fh, rgb).context("bad image size")?;
        let (ox, oy) = (gap + (k as u32 % cols) * (w + gap), gap + (k as u32 / cols) * (h + gap));
        image::imageops::overlay(&mut canvas, &face, ox as i64, oy as i64);
        for (p, c) in colours.iter().enumerate() {
            let (x, y) = (r.landmarks[2 * p].round() as i64, r.landmarks[2 * p + 1].round() as i64);
            for d in -2i64..=2 {
                for (px, py) in [(x + d, y), (x, y + d)] {
                    if px >= 0 && py >= 0 && (px as u32) < fw && (py as u32) < fh {
                        canvas.put_pixel(ox + px as u32, oy + py as u32, image::Rgb(*c));
                    }
                }
            }
        }
    }
    Ok((canvas, picks.len()))
}
