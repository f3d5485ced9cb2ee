//! The console: a web page to find, understand and repair identities, served by the binary
//! itself. Every asset is embedded at build time (nothing is fetched from the network, so it
//! works on an air-gapped host) and it calls the same admin API as any client.
//!
//! The pages themselves hold no data and need no token: the admin API they call does.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::ApiError;

/// The vendored graph library; its version and checksum are in `console/vendor/VENDORED`.
pub(crate) const CYTOSCAPE: &[u8] = include_bytes!("console/vendor/cytoscape.min.js");

/// Each asset: its name under `/console/`, its media type and its bytes.
pub(crate) const ASSETS: [(&str, &str, &[u8]); 5] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/app.js"),
    ),
    (
        "changes.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/changes.js"),
    ),
    (
        "graph.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/graph.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("console/style.css"),
    ),
    (
        "cytoscape.min.js",
        "text/javascript; charset=utf-8",
        CYTOSCAPE,
    ),
];

const INDEX: &str = include_str!("console/index.html");

/// `GET /console`: the page.
#[utoipa::path(get, path = "/console", tag = "operations",
    responses((status = 200, description = "The console's page; it asks for the admin token when the API wants one", content_type = "text/html")))]
pub async fn page() -> Response {
    asset_response("text/html; charset=utf-8", INDEX.as_bytes())
}

/// `GET /console/{file}`: a script or style sheet of the console.
#[utoipa::path(get, path = "/console/{file}", tag = "operations",
    params(("file" = String, Path, description = "app.js, graph.js, style.css or cytoscape.min.js")),
    responses((status = 200, description = "The asset"),
        (status = 404, description = "No such asset", body = super::openapi::ErrorBody)))]
pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (_, media, bytes) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| ApiError::NotFound(format!("the console has no file {file:?}")))?;
    Ok(asset_response(media, bytes))
}

/// `GET /`: to the console.
#[utoipa::path(get, path = "/", tag = "operations",
    responses((status = 303, description = "Redirects to /console")))]
pub async fn root() -> Redirect {
    Redirect::to("/console")
}

fn asset_response(media: &'static str, bytes: &'static [u8]) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, media),
            // Served from the binary: a new build may change them, so revalidate each time.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vendored file is exactly the one recorded: a change must update VENDORED too.
    #[test]
    fn the_vendored_graph_library_matches_its_recorded_checksum() {
        let record = include_str!("console/vendor/VENDORED");
        let recorded = record
            .lines()
            .find_map(|l| l.strip_prefix("sha256 "))
            .expect("VENDORED records a sha256 line");
        assert_eq!(sha256_hex(CYTOSCAPE), recorded.trim());
    }

    /// SHA-256 (FIPS 180-4), written out so the check needs no crate.
    fn sha256_hex(data: &[u8]) -> String {
        let mut h: [u32; 8] = [
            0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
            0x5be0cd19,
        ];
        let k = round_constants();
        let mut message = data.to_vec();
        message.push(0x80);
        while message.len() % 64 != 56 {
            message.push(0);
        }
        message.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
        for block in message.chunks(64) {
            let mut w = [0u32; 64];
            for (i, word) in block.chunks(4).enumerate() {
                w[i] = u32::from_be_bytes(word.try_into().expect("4 bytes"));
            }
            for i in 16..64 {
                let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
                let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
                w[i] = w[i - 16]
                    .wrapping_add(s0)
                    .wrapping_add(w[i - 7])
                    .wrapping_add(s1);
            }
            let mut v = h;
            for i in 0..64 {
                let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
                let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
                let t1 = v[7]
                    .wrapping_add(s1)
                    .wrapping_add(ch)
                    .wrapping_add(k[i])
                    .wrapping_add(w[i]);
                let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
                let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
                let t2 = s0.wrapping_add(maj);
                v = [
                    t1.wrapping_add(t2),
                    v[0],
                    v[1],
                    v[2],
                    v[3].wrapping_add(t1),
                    v[4],
                    v[5],
                    v[6],
                ];
            }
            for (x, y) in h.iter_mut().zip(v) {
                *x = x.wrapping_add(y);
            }
        }
        h.iter().map(|x| format!("{x:08x}")).collect()
    }

    /// The first 32 bits of the fractional parts of the cube roots of the first 64 primes.
    fn round_constants() -> [u32; 64] {
        let mut primes = Vec::with_capacity(64);
        let mut n = 2u64;
        while primes.len() < 64 {
            if (2..n)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
            {
                primes.push(n);
            }
            n += 1;
        }
        primes
            .iter()
            .map(|&p| {
                let root = integer_cube_root(u128::from(p) << 96);
                (root & 0xffff_ffff) as u32
            })
            .collect::<Vec<u32>>()
            .try_into()
            .expect("64 constants")
    }

    /// floor(cbrt(x)) for x below 2^128.
    fn integer_cube_root(x: u128) -> u128 {
        let mut lo = 0u128;
        let mut hi = 1u128 << 43;
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if mid * mid * mid <= x {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    #[test]
    fn sha256_of_a_known_text() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
