module optd

go 1.19
