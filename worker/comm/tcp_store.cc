#include "worker/comm/tcp_store.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "worker/core/status.h"

namespace tern::comm {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint8_t kSet = 1, kGet = 2, kAdd = 3, kWait = 4;
// Extra time a client waits for a reply beyond the server-side timeout of Get/Wait.
constexpr std::chrono::milliseconds kReplyGrace(5000);

std::string ErrnoText() { return std::strerror(errno); }

// Waits until fd is ready for `events` or the deadline passes (no deadline when max()).
absl::Status PollFd(int fd, short events, Clock::time_point deadline) {
  while (true) {
    int wait_ms = -1;
    if (deadline != Clock::time_point::max()) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return absl::DeadlineExceededError("socket I/O timed out");
      wait_ms = static_cast<int>(left.count());
    }
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, wait_ms);
    if (rc > 0) return absl::OkStatus();
    if (rc < 0 && errno != EINTR) return absl::UnavailableError("poll: " + ErrnoText());
  }
}

absl::Status WriteAll(int fd, const std::string& data, Clock::time_point deadline) {
  size_t done = 0;
  while (done < data.size()) {
    TERN_RETURN_IF_ERROR(PollFd(fd, POLLOUT, deadline));
    ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return absl::UnavailableError("send: " + ErrnoText());
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status ReadAll(int fd, void* out, size_t len, Clock::time_point deadline) {
  size_t done = 0;
  auto* p = static_cast<char*>(out);
  while (done < len) {
    TERN_RETURN_IF_ERROR(PollFd(fd, POLLIN, deadline));
    ssize_t n = ::recv(fd, p + done, len - done, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n == 0) return absl::UnavailableError("connection closed by peer");
    if (n < 0) return absl::UnavailableError("recv: " + ErrnoText());
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

void PutU32(std::string& out, uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }

std::string EncodeI64(int64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }

absl::StatusOr<int64_t> DecodeI64(const std::string& s) {
  if (s.size() != 8) return absl::InvalidArgumentError("malformed integer field");
  int64_t v;
  std::memcpy(&v, s.data(), 8);
  return v;
}

std::string Encode(uint8_t head, const std::vector<std::string>& fields) {
  std::string out(1, static_cast<char>(head));
  PutU32(out, static_cast<uint32_t>(fields.size()));
  for (const auto& f : fields) {
    PutU32(out, static_cast<uint32_t>(f.size()));
    out += f;
  }
  return out;
}

// Reads one message: its head byte and fields. Enforces the size limits.
absl::Status ReadMessage(int fd, Clock::time_point deadline, uint8_t* head,
                         std::vector<std::string>* fields) {
  TERN_RETURN_IF_ERROR(ReadAll(fd, head, 1, deadline));
  uint32_t count = 0;
  TERN_RETURN_IF_ERROR(ReadAll(fd, &count, 4, deadline));
  if (count > kMaxFields) {
    return absl::InvalidArgumentError(
        absl::StrCat("message has ", count, " fields (max ", kMaxFields, ")"));
  }
  fields->assign(count, std::string());
  for (auto& f : *fields) {
    uint32_t len = 0;
    TERN_RETURN_IF_ERROR(ReadAll(fd, &len, 4, deadline));
    if (len > kMaxFieldBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("field of ", len, " bytes exceeds the limit of ", kMaxFieldBytes));
    }
    f.resize(len);
    TERN_RETURN_IF_ERROR(ReadAll(fd, f.data(), len, deadline));
  }
  return absl::OkStatus();
}

std::vector<uint8_t> AsBytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string AsString(const std::vector<uint8_t>& v) { return {v.begin(), v.end()}; }

// Executes one request against the server's data; returns the reply message.
std::string Handle(InMemoryStore& data, uint8_t op, const std::vector<std::string>& f) {
  absl::Status status;
  std::vector<std::string> reply;
  auto need = [&](size_t n) {
    if (f.size() < n) status = absl::InvalidArgumentError("request has too few fields");
    return status.ok();
  };
  switch (op) {
    case kSet:
      if (need(2)) status = data.Set(f[0], AsBytes(f[1]));
      break;
    case kGet:
      if (need(2)) {
        auto timeout = DecodeI64(f[1]);
        auto v = timeout.ok() ? data.Get(f[0], std::chrono::milliseconds(*timeout))
                              : absl::StatusOr<std::vector<uint8_t>>(timeout.status());
        if (v.ok()) reply.push_back(AsString(*v));
        status = v.status();
      }
      break;
    case kAdd:
      if (need(2)) {
        auto delta = DecodeI64(f[1]);
        auto v = delta.ok() ? data.Add(f[0], *delta) : absl::StatusOr<int64_t>(delta.status());
        if (v.ok()) reply.push_back(EncodeI64(*v));
        status = v.status();
      }
      break;
    case kWait:
      if (need(1)) {
        auto timeout = DecodeI64(f[0]);
        status = timeout.ok() ? data.Wait(std::vector<std::string>(f.begin() + 1, f.end()),
                                          std::chrono::milliseconds(*timeout))
                              : timeout.status();
      }
      break;
    default:
      status = absl::InvalidArgumentError(absl::StrCat("unknown store op ", int{op}));
  }
  if (!status.ok()) {
    return Encode(static_cast<uint8_t>(status.code()), {std::string(status.message())});
  }
  return Encode(0, reply);
}

}  // namespace

// ---- Server -----------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<TcpStoreServer>> TcpStoreServer::Start(int port,
                                                                      const std::string& host) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("tcp store: host '", host, "' is not an IPv4 address"));
  }
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError("tcp store: socket: " + ErrnoText());
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 128) != 0) {
    std::string err = ErrnoText();
    ::close(fd);
    return absl::UnavailableError(
        absl::StrCat("tcp store: cannot listen on ", host, ":", port, ": ", err));
  }
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  std::unique_ptr<TcpStoreServer> server(new TcpStoreServer(fd, host, ntohs(addr.sin_port)));
  server->accept_thread_ = std::thread([s = server.get()] { s->AcceptLoop(); });
  return server;
}

TcpStoreServer::~TcpStoreServer() { Stop(); }

void TcpStoreServer::AcceptLoop() {
  while (!stopping_.load()) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (!stopping_.load()) spdlog::warn("tcp store: accept failed: {}", ErrnoText());
      return;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) {
      ::close(fd);
      return;
    }
    ReapFinished();
    accepted_.fetch_add(1);
    auto conn = std::make_unique<Connection>();
    conn->fd = fd;
    Connection* raw = conn.get();
    conns_.push_back(std::move(conn));
    raw->thread = std::thread([this, raw] { Serve(raw); });
  }
}

void TcpStoreServer::ReapFinished() {
  for (auto it = conns_.begin(); it != conns_.end();) {
    if ((*it)->done.load()) {
      (*it)->thread.join();
      ::close((*it)->fd);
      it = conns_.erase(it);
    } else {
      ++it;
    }
  }
}

void TcpStoreServer::Serve(Connection* conn) {
  while (!stopping_.load()) {
    uint8_t op = 0;
    std::vector<std::string> fields;
    absl::Status st = ReadMessage(conn->fd, Clock::time_point::max(), &op, &fields);
    if (!st.ok()) break;  // client went away, a malformed frame, or shutdown
    if (!WriteAll(conn->fd, Handle(data_, op, fields), Clock::now() + kDefaultCollectiveTimeout)
             .ok())
      break;
  }
  ::shutdown(conn->fd, SHUT_RDWR);
  conn->done.store(true);
}

void TcpStoreServer::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  stopping_.store(true);
  ::shutdown(listen_fd_, SHUT_RDWR);  // wakes accept()
  if (accept_thread_.joinable()) accept_thread_.join();
  ::close(listen_fd_);
  data_.Shutdown();  // wakes blocked Get/Wait
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& conn : conns_) ::shutdown(conn->fd, SHUT_RDWR);
  for (auto& conn : conns_) {
    conn->thread.join();
    ::close(conn->fd);
  }
  conns_.clear();
}

// ---- Client -----------------------------------------------------------------------------

namespace {

absl::StatusOr<int> ConnectOnce(const std::string& host, int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("tcp store: host '", host, "' is not an IPv4 address"));
  }
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError("socket: " + ErrnoText());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::string err = ErrnoText();
    ::close(fd);
    return absl::UnavailableError(err);
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TcpStore>> TcpStore::Connect(const std::string& host, int port,
                                                            std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  auto backoff = std::chrono::milliseconds(10);
  while (true) {
    auto fd = ConnectOnce(host, port);
    if (fd.ok()) return std::unique_ptr<TcpStore>(new TcpStore(host, port, *fd));
    if (fd.status().code() == absl::StatusCode::kInvalidArgument) return fd.status();
    if (Clock::now() + backoff >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "tcp store: could not connect to ", host, ":", port, " within ", timeout.count(),
          " ms (last error: ", fd.status().message(), "); --> hint: is the store server running?"));
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(200));
  }
}

TcpStore::~TcpStore() {
  for (int fd : idle_) ::close(fd);
}

std::string TcpStore::Where() const { return absl::StrCat("tcp store ", host_, ":", port_); }

absl::StatusOr<std::vector<std::string>> TcpStore::Call(uint8_t op,
                                                        const std::vector<std::string>& fields,
                                                        std::chrono::milliseconds reply_timeout) {
  for (const auto& f : fields) {
    if (f.size() > kMaxFieldBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          Where(), ": value of ", f.size(), " bytes exceeds the limit of ", kMaxFieldBytes));
    }
  }
  int fd = -1;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      fd = idle_.back();
      idle_.pop_back();
    }
  }
  if (fd < 0) {  // all connections busy (or dropped after an error): open another
    auto opened = ConnectOnce(host_, port_);
    if (!opened.ok()) {
      return absl::UnavailableError(
          absl::StrCat(Where(), ": cannot connect: ", opened.status().message()));
    }
    fd = *opened;
  }
  const auto deadline = Clock::now() + reply_timeout;
  uint8_t code = 0;
  std::vector<std::string> reply;
  absl::Status io = WriteAll(fd, Encode(op, fields), deadline);
  if (io.ok()) io = ReadMessage(fd, deadline, &code, &reply);
  if (!io.ok()) {
    ::close(fd);
    return absl::UnavailableError(absl::StrCat(Where(), ": ", io.message()));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    idle_.push_back(fd);
  }
  if (code != 0) {
    return absl::Status(static_cast<absl::StatusCode>(code),
                        absl::StrCat(Where(), ": ", reply.empty() ? "" : reply[0]));
  }
  return reply;
}

absl::Status TcpStore::Set(const std::string& key, const std::vector<uint8_t>& value) {
  return Call(kSet, {key, AsString(value)}, kDefaultCollectiveTimeout).status();
}

absl::StatusOr<std::vector<uint8_t>> TcpStore::Get(const std::string& key,
                                                   std::chrono::milliseconds timeout) {
  TERN_ASSIGN_OR_RETURN(auto reply,
                        Call(kGet, {key, EncodeI64(timeout.count())}, timeout + kReplyGrace));
  if (reply.size() != 1) return absl::InternalError(Where() + ": malformed Get reply");
  return AsBytes(reply[0]);
}

absl::StatusOr<int64_t> TcpStore::Add(const std::string& key, int64_t delta) {
  TERN_ASSIGN_OR_RETURN(auto reply, Call(kAdd, {key, EncodeI64(delta)}, kDefaultCollectiveTimeout));
  if (reply.size() != 1) return absl::InternalError(Where() + ": malformed Add reply");
  return DecodeI64(reply[0]);
}

absl::Status TcpStore::Wait(const std::vector<std::string>& keys,
                            std::chrono::milliseconds timeout) {
  std::vector<std::string> fields{EncodeI64(timeout.count())};
  fields.insert(fields.end(), keys.begin(), keys.end());
  return Call(kWait, fields, timeout + kReplyGrace).status();
}

}  // namespace tern::comm
