//! The static file server against real files in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{HeaderMap, HeaderValue, Method};
use http_body_util::BodyExt;
use nanoscale_proxy::static_files::serve;
use tokio::io::AsyncReadExt;

async fn get(
    root: &std::path::Path,
    path: &str,
    headers: &[(&'static str, &str)],
) -> (u16, HeaderMap, Vec<u8>) {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    let response = serve(root, &Method::GET, path, &map).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

#[tokio::test]
async fn files_are_served_compressed_ranged_and_never_from_outside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("site");
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::write(root.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(root.join("docs/index.html"), "<h1>docs</h1>").unwrap();
    let script = "console.log('hello');\n".repeat(200);
    std::fs::write(root.join("app.js"), &script).unwrap();
    std::fs::write(root.join("big.css"), "a{}".repeat(1000)).unwrap();
    std::fs::write(root.join("big.css.br"), b"brotli bytes").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("leak.txt")).unwrap();
    std::fs::write(root.join(".env"), "SECRET=1").unwrap();

    let (status, headers, body) = get(&root, "/", &[]).await;
    assert_eq!(
        (status, body.as_slice()),
        (200, b"<h1>home</h1>".as_slice())
    );
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-content-type-options"], "nosniff");

    let (status, headers, _) = get(&root, "/docs", &[]).await;
    assert_eq!(
        (status, headers["location"].to_str().unwrap()),
        (301, "docs/")
    );
    let (status, _, body) = get(&root, "/docs/", &[]).await;
    assert_eq!(
        (status, body.as_slice()),
        (200, b"<h1>docs</h1>".as_slice())
    );

    // On-the-fly gzip for text, decompressing to the file.
    let (status, headers, body) =
        get(&root, "/app.js", &[("accept-encoding", "gzip, deflate")]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["vary"], "Accept-Encoding");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));
    let mut decoder = async_compression::tokio::bufread::GzipDecoder::new(body.as_slice());
    let mut plain = String::new();
    decoder.read_to_string(&mut plain).await.unwrap();
    assert_eq!(plain, script);
    // A precompressed sibling wins when the client takes it.
    let (_, headers, body) = get(&root, "/big.css", &[("accept-encoding", "br, gzip")]).await;
    assert_eq!(
        (
            headers["content-encoding"].to_str().unwrap(),
            body.as_slice()
        ),
        ("br", b"brotli bytes".as_slice())
    );
    let (_, headers, body) = get(&root, "/big.css", &[]).await;
    assert!(headers.get("content-encoding").is_none());
    assert_eq!(body.len(), 3000);

    // Conditional and range requests.
    let (_, headers, _) = get(&root, "/big.css", &[]).await;
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let modified = headers["last-modified"].to_str().unwrap().to_owned();
    assert_eq!(
        get(&root, "/big.css", &[("if-none-match", &etag)]).await.0,
        304
    );
    assert_eq!(
        get(&root, "/big.css", &[("if-modified-since", &modified)])
            .await
            .0,
        304
    );
    let (status, headers, body) = get(&root, "/big.css", &[("range", "bytes=-3")]).await;
    assert_eq!((status, body.as_slice()), (206, b"a{}".as_slice()));
    assert_eq!(headers["content-range"], "bytes 2997-2999/3000");
    let (status, headers, _) = get(&root, "/big.css", &[("range", "bytes=5000-")]).await;
    assert_eq!(
        (status, headers["content-range"].to_str().unwrap()),
        (416, "bytes */3000")
    );

    // Nothing outside the root, no dotfiles, no traversal.
    for path in [
        "/leak.txt",
        "/.env",
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/docs/..%2f..%2fsecret.txt",
        "/nope",
    ] {
        assert_eq!(get(&root, path, &[]).await.0, 404, "{path}");
    }
    std::fs::write(root.join("404.html"), "custom missing page").unwrap();
    let (status, _, body) = get(&root, "/nope", &[]).await;
    assert_eq!(
        (status, body.as_slice()),
        (404, b"custom missing page".as_slice())
    );

    // HEAD has the length and no body; other methods are refused.
    let head = serve(&root, &Method::HEAD, "/big.css", &HeaderMap::new()).await;
    assert_eq!(head.headers()["content-length"], "3000");
    assert!(head
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .is_empty());
    let post = serve(&root, &Method::POST, "/", &HeaderMap::new()).await;
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
}
