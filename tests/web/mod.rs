//! Browsers: gRPC-Web and CORS on the gRPC port (a real HTTP/1.1 client, as a browser
//! without TLS speaks it), the WebSocket stream, and the voice search page in headless
//! Chromium.

mod browser;
mod grpc_web;
mod websocket;
