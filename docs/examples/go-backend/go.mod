module example.com/streamsrv-go-backend

go 1.19
