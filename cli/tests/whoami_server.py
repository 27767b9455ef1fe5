"""A tiny HTTP server for the end-to-end tests: serves files from the current directory, and
/whoami answers with the client's address as the server saw it (to prove NAT keeps or hides it).

  whoami_server.py PORT [ADDRESS]    ADDRESS defaults to 0.0.0.0; "::" serves IPv6 (and IPv4)."""
import http.server
import socket
import socketserver
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/whoami":
            body = self.client_address[0].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            super().do_GET()

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    def server_bind(self):
        # HTTPServer.server_bind looks the host name up (socket.getfqdn) between bind and listen:
        # in a namespace whose resolver is unreachable that stalls for seconds with the port not
        # yet listening. The name is only used in CGI variables.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "localhost", self.server_address[1]


address = sys.argv[2] if len(sys.argv) > 2 else "0.0.0.0"
if ":" in address:
    Server.address_family = socket.AF_INET6
Server((address, int(sys.argv[1])), Handler).serve_forever()
