// TcpStore: a tiny rendezvous key-value server hosted inside one process (e.g. `tern train` for
// its local rank processes) and the matching Store client.
//
// Wire protocol (all integers little-endian, one request/reply at a time per connection):
//   request = u8 op, u32 field_count, field_count x (u32 length, bytes)
//   reply   = u8 code, u32 field_count, field_count x (u32 length, bytes)
//   ops:   kSet(key, value) -> ()          kGet(key, timeout_ms:i64) -> (value)
//          kAdd(key, delta:i64) -> (i64)   kWait(timeout_ms:i64, key...) -> ()
//   codes: 0 ok; otherwise an absl::StatusCode with one field holding the message.
// A field is at most kMaxFieldBytes and a message holds at most kMaxFields fields.
#pragma once

#include <atomic>
#include <list>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "worker/comm/comm.h"
#include "worker/comm/in_memory_store.h"
#include "worker/comm/store.h"

namespace tern::comm {

inline constexpr uint32_t kMaxFieldBytes = 64u << 20;
inline constexpr uint32_t kMaxFields = 4096;

// Serves the store on host:port with one thread per client connection. The data lives in an
// InMemoryStore; blocking Get/Wait requests block only their own connection's thread.
class TcpStoreServer {
 public:
  // Binds and listens; port 0 picks an ephemeral port (see port()).
  static absl::StatusOr<std::unique_ptr<TcpStoreServer>> Start(
      int port = 0, const std::string& host = "127.0.0.1");
  ~TcpStoreServer();
  TcpStoreServer(const TcpStoreServer&) = delete;
  TcpStoreServer& operator=(const TcpStoreServer&) = delete;

  int port() const { return port_; }
  const std::string& host() const { return host_; }
  // Closes the listener and every connection, fails blocked requests with UNAVAILABLE and joins
  // all threads. Idempotent; the destructor calls it.
  void Stop();
  // Connections accepted so far (for tests).
  int connections_accepted() const { return accepted_.load(); }

 private:
  struct Connection {
    int fd = -1;
    std::thread thread;
    std::atomic<bool> done{false};
  };
  TcpStoreServer(int listen_fd, std::string host, int port)
      : listen_fd_(listen_fd), host_(std::move(host)), port_(port) {}
  void AcceptLoop();
  void Serve(Connection* conn);
  void ReapFinished();  // requires mu_

  int listen_fd_;
  std::string host_;
  int port_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> accepted_{0};
  InMemoryStore data_;
  std::thread accept_thread_;
  std::mutex mu_;  // guards conns_ and stopped_
  std::list<std::unique_ptr<Connection>> conns_;
  bool stopped_ = false;
};

// Client. Thread-safe: each request takes an idle connection from a small pool (opening a new one
// when all are busy, e.g. while another thread blocks in Get), so concurrent callers never wait
// for each other. A connection that saw an I/O error is dropped.
class TcpStore : public Store {
 public:
  // Connects to host:port, retrying until `connect_timeout` passes (the server may start later).
  static absl::StatusOr<std::unique_ptr<TcpStore>> Connect(
      const std::string& host, int port,
      std::chrono::milliseconds connect_timeout = kDefaultCollectiveTimeout);
  ~TcpStore() override;

  absl::Status Set(const std::string& key, const std::vector<uint8_t>& value) override;
  absl::StatusOr<std::vector<uint8_t>> Get(const std::string& key,
                                           std::chrono::milliseconds timeout) override;
  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta) override;
  absl::Status Wait(const std::vector<std::string>& keys,
                    std::chrono::milliseconds timeout) override;

 private:
  TcpStore(std::string host, int port, int fd) : host_(std::move(host)), port_(port), idle_{fd} {}
  // Sends one request and reads its reply; `reply_timeout` bounds the wait for the reply.
  absl::StatusOr<std::vector<std::string>> Call(uint8_t op, const std::vector<std::string>& fields,
                                                std::chrono::milliseconds reply_timeout);
  std::string Where() const;

  std::string host_;
  int port_;
  std::mutex mu_;
  std::vector<int> idle_;  // idle connections, guarded by mu_
};

}  // namespace tern::comm
