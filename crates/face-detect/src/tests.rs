//! The cascade's arithmetic against hand-computed values.

use super::*;

fn cand(b: [f32; 4], score: f32) -> Candidate {
    Candidate {
        bbox: b,
        score,
        reg: [0.0; 4],
    }
}

#[test]
fn the_pyramid_stops_when_the_shorter_side_drops_under_twelve() {
    // 100 px, min_face 20: 60, 42.5, 30.2, 21.4, 15.2 px (then 10.7 < 12).
    let s = scales(100, 150, &DetectParams::default());
    assert_eq!(s.len(), 5);
    assert!((s[0] - 0.6).abs() < 1e-12);
    assert!((s[4] - 0.6 * 0.709f32 as f64 * 0.709f32 as f64 * 0.709f32 as f64 * 0.709f32 as f64).abs() < 1e-9);
    assert!(scales(
        11,
        500,
        &DetectParams {
            min_face: 12.0,
            ..Default::default()
        }
    )
    .is_empty());
}

#[test]
fn area_resampling_averages_the_covered_pixels() {
    // One plane 0..16 (4 × 4), the others zero.
    let mut data = vec![0f32; 3 * 16];
    for (i, v) in data.iter_mut().take(16).enumerate() {
        *v = i as f32;
    }
    let img = Planes {
        data: &data,
        height: 4,
        width: 4,
    };
    // 2 × 2: each output averages a 2 × 2 block.
    let down = resample_area(&img, 0, 0, 4, 4, 2, 2);
    assert_eq!(&down[..4], &[2.5, 4.5, 10.5, 12.5]);
    // A 1 × 3 window (row 1, columns 1..4) to 1 × 2: spans [0, 2) and [1, 3) of 5, 6, 7.
    let odd = resample_area(&img, 1, 1, 1, 3, 1, 2);
    assert_eq!(&odd[..2], &[5.5, 6.5]);
    // Up: 2 columns to 3 repeats the middle: spans [0,1), [0,2), [1,2).
    let up = resample_area(&img, 0, 0, 1, 2, 1, 3);
    assert_eq!(&up[..3], &[0.0, 0.5, 1.0]);
}

#[test]
fn pnet_cells_map_to_twelve_pixel_windows_in_the_image() {
    // A 2 × 3 map; only cell (row 1, column 2) passes 0.6.
    let map = spherepipe_nn::mtcnn::PnetMap {
        height: 2,
        width: 3,
        prob: vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.9],
        reg: (0..24).map(|i| i as f32 / 100.0).collect(),
    };
    let boxes = cells_to_boxes(&map, 0.5, 0.6);
    assert_eq!(boxes.len(), 1);
    // x: (2·2 + 1) / 0.5 = 10, (2·2 + 12) / 0.5 = 32; y: (2 + 1) / 0.5 = 6, (2 + 12) / 0.5 = 28.
    assert_eq!(boxes[0].bbox, [10.0, 6.0, 32.0, 28.0]);
    assert_eq!(boxes[0].score, 0.9);
    // Offsets are the four planes at index 5.
    assert_eq!(boxes[0].reg, [0.05, 0.11, 0.17, 0.23]);
}

#[test]
fn nms_by_union_and_by_min_area() {
    // a: 10 × 10 at the origin; b: shifted 5 right (IoU 50/150 = 1/3); c: inside a (4 × 4).
    let boxes = [
        cand([0.0, 0.0, 10.0, 10.0], 0.9),
        cand([5.0, 0.0, 15.0, 10.0], 0.8),
        cand([2.0, 2.0, 6.0, 6.0], 0.7),
    ];
    // b's IoU with a is 1/3; c's is 16/100.
    assert_eq!(nms(&boxes, 0.3, Overlap::Union), vec![0, 2]);
    assert_eq!(nms(&boxes, 0.34, Overlap::Union), vec![0, 1, 2]);
    assert_eq!(nms(&boxes, 0.15, Overlap::Union), vec![0]);
    // By the smaller area (+1): c is all inside a (25 of 25) and goes; b shares 66 of 121.
    assert_eq!(nms(&boxes, 0.7, Overlap::Min), vec![0, 1]);
    assert_eq!(nms(&boxes, 0.5, Overlap::Min), vec![0]);
    // Best score first, whatever the input order.
    let swapped = [boxes[2], boxes[1], boxes[0]];
    assert_eq!(nms(&swapped, 0.5, Overlap::Union), vec![2, 1, 0]);
}

#[test]
fn regression_squaring_and_points_by_hand() {
    // 10 × 20 box (+1 inclusive: 11 × 21), moved by 10% of its size.
    let r = regress([0.0, 0.0, 10.0, 20.0], [0.1, -0.1, 0.0, 0.5]);
    for (got, want) in r.iter().zip([1.1, -2.1, 10.0, 30.5]) {
        assert!((got - want).abs() < 1e-5, "{r:?}");
    }
    // 10 wide, 20 high: the 20-square with the same centre (5, 10).
    assert_eq!(square([0.0, 0.0, 10.0, 20.0]), [-5.0, 0.0, 15.0, 20.0]);
    // Points: fractions of the 11 × 21 box, less one (facenet-pytorch's placement).
    let p = points_of([10.0, 20.0, 20.0, 40.0], &[0.0, 1.0, 0.5, 0.2, 0.8, 0.0, 0.0, 0.5, 1.0, 1.0]);
    assert_eq!(p[0], [9.0, 19.0]);
    assert_eq!(p[1], [20.0, 19.0]);
    assert_eq!(p[2], [14.5, 29.5]);
    assert_eq!(p[4], [17.8, 40.0]);
}

#[test]
fn crops_outside_the_image_are_dropped_and_edges_clipped() {
    let data = vec![100f32; 3 * 20 * 30];
    let img = Planes {
        data: &data,
        height: 20,
        width: 30,
    };
    let boxes = vec![
        cand([-5.0, -5.0, 10.0, 10.0], 0.9),  // clipped to the corner
        cand([40.0, 0.0, 50.0, 10.0], 0.9),   // right of the image
        cand([f32::NAN, 0.0, 5.0, 5.0], 0.9), // not a box
    ];
    let (kept, crops) = crop_boxes(&img, boxes, 24);
    assert_eq!(kept.len(), 1);
    assert_eq!(crops.len(), 3 * 24 * 24);
    // A flat 100 image normalises to (100 − 127.5) / 128.
    assert!(crops.iter().all(|&v| (v - (100.0 - 127.5) * 0.0078125).abs() < 1e-6));
}
