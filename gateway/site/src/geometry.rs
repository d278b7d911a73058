//! Plane geometry on `[lon, lat]` positions: enough for the polygons of one park.

/// Ray casting: true when `point` lies inside `ring`.
pub fn contains(ring: &[[f64; 2]], point: [f64; 2]) -> bool {
    let [x, y] = point;
    let mut inside = false;
    for pair in ring.windows(2) {
        let ([x1, y1], [x2, y2]) = (pair[0], pair[1]);
        if (y1 > y) != (y2 > y) && x < (x2 - x1) * (y - y1) / (y2 - y1) + x1 {
            inside = !inside;
        }
    }
    inside
}

/// Distance in metres between two `[lon, lat]` points (equirectangular; fine within a park).
pub fn distance_m(a: [f64; 2], b: [f64; 2]) -> f64 {
    let mean_lat = ((a[1] + b[1]) / 2.0).to_radians();
    let dx = (a[0] - b[0]).to_radians() * mean_lat.cos();
    let dy = (a[1] - b[1]).to_radians();
    6_371_000.0 * (dx * dx + dy * dy).sqrt()
}

/// Twice the signed area of a closed ring (shoelace).
fn doubled_area(ring: &[[f64; 2]]) -> f64 {
    ring.windows(2)
        .map(|p| p[0][0] * p[1][1] - p[1][0] * p[0][1])
        .sum()
}

fn orientation(a: [f64; 2], b: [f64; 2], c: [f64; 2]) -> f64 {
    (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
}

/// Whether segments `ab` and `cd` cross at a point inside both (touching ends do not count).
fn cross(a: [f64; 2], b: [f64; 2], c: [f64; 2], d: [f64; 2]) -> bool {
    let (d1, d2) = (orientation(c, d, a), orientation(c, d, b));
    let (d3, d4) = (orientation(a, b, c), orientation(a, b, d));
    d1 * d2 < 0.0 && d3 * d4 < 0.0
}

/// What is wrong with a polygon's outer ring, if anything.
pub(crate) fn ring_problem(ring: &[[f64; 2]]) -> Option<&'static str> {
    if ring.len() < 4 {
        return Some("a ring needs at least 4 positions");
    }
    if ring.first() != ring.last() {
        return Some("the ring is not closed (its last position must repeat its first)");
    }
    if ring
        .iter()
        .any(|[lon, lat]| !(-180.0..=180.0).contains(lon) || !(-90.0..=90.0).contains(lat))
    {
        return Some("a position is not a longitude and latitude");
    }
    let edges = ring.len() - 1;
    for i in 0..edges {
        for j in i + 1..edges {
            if cross(ring[i], ring[i + 1], ring[j], ring[j + 1]) {
                return Some("the ring crosses itself");
            }
        }
    }
    if doubled_area(ring) == 0.0 {
        return Some("the ring encloses no area");
    }
    None
}

/// Whether two rings share some area: an edge of one crosses an edge of the other, or one
/// lies inside the other.
pub(crate) fn overlap(a: &[[f64; 2]], b: &[[f64; 2]]) -> bool {
    let crossing = a
        .windows(2)
        .any(|e| b.windows(2).any(|f| cross(e[0], e[1], f[0], f[1])));
    crossing || contains(b, a[0]) || contains(a, b[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQUARE: [[f64; 2]; 5] = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]];

    #[test]
    fn containment_and_distance() {
        assert!(contains(&SQUARE, [0.5, 0.5]));
        assert!(!contains(&SQUARE, [1.5, 0.5]));
        let d = distance_m([12.594, 55.660], [12.594, 55.661]);
        assert!((d - 111.2).abs() < 0.5, "{d}");
    }

    #[test]
    fn bad_rings_are_named() {
        assert_eq!(ring_problem(&SQUARE), None);
        let bow_tie = [[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]];
        assert_eq!(ring_problem(&bow_tie), Some("the ring crosses itself"));
        let open = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]];
        assert!(ring_problem(&open).unwrap().contains("not closed"));
        let flat = [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 0.0]];
        assert_eq!(ring_problem(&flat), Some("the ring encloses no area"));
        let swapped = [[55.0, 12.0], [55.0, 200.0], [56.0, 12.0], [55.0, 12.0]];
        assert!(ring_problem(&swapped).unwrap().contains("longitude"));
    }

    #[test]
    fn overlap_by_crossing_edges_or_containment() {
        let shifted = SQUARE.map(|[x, y]| [x + 0.5, y + 0.5]);
        let inner = SQUARE.map(|[x, y]| [x * 0.2 + 0.4, y * 0.2 + 0.4]);
        let apart = SQUARE.map(|[x, y]| [x + 2.0, y]);
        let touching = SQUARE.map(|[x, y]| [x + 1.0, y]);
        assert!(overlap(&SQUARE, &shifted));
        assert!(overlap(&SQUARE, &inner) && overlap(&inner, &SQUARE));
        assert!(!overlap(&SQUARE, &apart));
        assert!(!overlap(&SQUARE, &touching), "a shared edge is no overlap");
    }
}
