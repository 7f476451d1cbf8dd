module github.com/optd-dev/optd/clients/go

go 1.19
